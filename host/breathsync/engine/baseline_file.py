"""A therapist's pre-session baseline on disk: one small JSON file, validated on read.

Written by ``breathsync calibrate``, read by ``breathsync run`` / ``breathsync replay`` and stored in
the session so a replay of that session uses the same baseline::

    {"format": "breathsync-baseline", "version": 1, "rate_bpm": 13.8, "rate_sd_bpm": 1.2,
     "depth": 2140.0, "n_breaths": 28, "duration_s": 120.0, "source": "ble:strap-T",
     "created": "2026-11-22T09:58:00+00:00"}

``depth`` is in the units of the strap (or recording) it was measured with; the engine only reports
it. Rate and variability are what the decision uses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..small_files import not_a_regular_file, read_small_file
from ..values import finite_float, shown
from .person import MIN_BASELINE_BREATHS
from .state import Baseline

if TYPE_CHECKING:  # a session is only handed in: no store import for readers of a baseline file
    from ..store import SessionStore

FORMAT = "breathsync-baseline"
VERSION = 1
RATE_RANGE_BPM = (2.0, 80.0)  # wider than the detector's 4-60/min: a file is rejected only when absurd
MAX_RATE_SD_BPM = 30.0
MAX_BREATHS = 100_000  # an hour of calibration at 80/min is under 5,000


@dataclass(frozen=True)
class BaselineFile:
    """A validated calibration: the baseline and what it was measured from (a session keeps all of it)."""

    baseline: Baseline
    source: str  # what was recorded: "ble:strap-T", "recording:therapist.csv", ...
    created: str  # ISO 8601 time of the calibration ("" when the file did not say)
    duration_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return baseline_to_dict(self.baseline, self.source, self.duration_s, self.created)


def baseline_to_dict(
    baseline: Baseline, source: str = "", duration_s: float | None = None, created: str | None = None
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "rate_bpm": round(baseline.rate_bpm, 4),
        "rate_sd_bpm": round(baseline.rate_sd_bpm, 4),
        "depth": round(baseline.depth, 4),
        "n_breaths": baseline.n_breaths,
        "duration_s": None if duration_s is None else round(duration_s, 3),
        "source": source,
        # a new calibration is stamped now; a stored one keeps its own time, even when it had none ("")
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds") if created is None else created,
    }


def baseline_from_dict(data: object, where: str) -> Baseline:
    """The ``Baseline`` in ``data`` (a parsed file); ``InputError`` naming ``where`` when it is unusable."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: not a breathsync baseline (expected a JSON object)")
    if data.get("format") != FORMAT:
        raise InputError(f"{where}: not a breathsync baseline (format is {shown(data.get('format'))})")
    version = data.get("version")
    if type(version) is not int or version != VERSION:  # not True, not 1.0: a file we did not write
        raise InputError(f"{where}: baseline version {shown(data.get('version'))} is not supported (this is {VERSION})")

    def number(key: str) -> float:
        value = finite_float(data.get(key))
        if value is None:
            raise InputError(f"{where}: {key} must be a finite number (got {shown(data.get(key))})")
        return value

    rate = number("rate_bpm")
    sd = number("rate_sd_bpm")
    depth = number("depth")
    breaths = data.get("n_breaths")
    lo, hi = RATE_RANGE_BPM
    if not lo <= rate <= hi:
        raise InputError(f"{where}: rate_bpm must be within [{lo:g}, {hi:g}] (got {rate:g})")
    if not 0.0 < sd <= MAX_RATE_SD_BPM:
        raise InputError(f"{where}: rate_sd_bpm must be within (0, {MAX_RATE_SD_BPM:g}] (got {sd:g})")
    if depth < 0.0:
        raise InputError(f"{where}: depth must be >= 0 (got {depth:g})")
    if isinstance(breaths, bool) or not isinstance(breaths, int) or not MIN_BASELINE_BREATHS <= breaths <= MAX_BREATHS:
        raise InputError(
            f"{where}: n_breaths must be an integer within [{MIN_BASELINE_BREATHS}, {MAX_BREATHS}] "
            f"(got {shown(breaths)})"
        )
    return Baseline(rate_bpm=rate, rate_sd_bpm=sd, depth=depth, n_breaths=breaths)


def baseline_file_from_dict(data: object, where: str) -> BaselineFile:
    """``baseline_from_dict`` plus the calibration's own description (source, time, duration)."""
    baseline = baseline_from_dict(data, where)
    assert isinstance(data, dict)  # checked by baseline_from_dict
    source, created, duration = data.get("source"), data.get("created"), data.get("duration_s")
    return BaselineFile(
        baseline,
        source if isinstance(source, str) else "",
        created if isinstance(created, str) else "",
        finite_float(duration),
    )


def read_baseline(path: str | Path) -> Baseline:
    return read_baseline_file(path).baseline


def read_baseline_file(path: str | Path) -> BaselineFile:
    path = Path(path)
    try:
        text = read_small_file(path, MAX_BASELINE_FILE_BYTES, "breathsync baseline").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, not a breathsync baseline") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: not a breathsync baseline (nested too deeply)") from None
    except ValueError:  # Python's limit on the digits of an integer (4300)
        raise InputError(f"{path}: invalid JSON: a number with too many digits") from None
    return baseline_file_from_dict(data, str(path))


MAX_BASELINE_FILE_BYTES = 65536  # a baseline is a few hundred bytes; anything this large is some other file


def check_baseline_target(path: str | Path, option: str = "--out") -> None:
    """Refuse to overwrite an existing file that is not a breathsync baseline (a recording, a session, notes):
    replacing an older calibration is what the option is for, replacing anything else loses it."""
    path = Path(path)
    kind = not_a_regular_file(path)
    if kind is not None:
        raise InputError(f"{option} {path}: {kind}; a baseline is written to a file")
    if not path.exists():
        return
    data: object = None
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, RecursionError):
        if path.stat().st_size <= MAX_BASELINE_FILE_BYTES:
            data = json.loads(path.read_text(encoding="utf-8"))
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        raise InputError(
            f"{option} {path}: exists and is not a breathsync baseline; not overwriting it "
            "(choose another file name, or remove it first)"
        )


def write_baseline(path: str | Path, baseline: Baseline, source: str = "", duration_s: float | None = None) -> None:
    path = Path(path)
    text = json.dumps(baseline_to_dict(baseline, source, duration_s), indent=2) + "\n"
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # never a half-written baseline
    except OSError as exc:
        with contextlib.suppress(OSError):  # on a read-only file system this fails too: say the first failure
            tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- the calibration a session keeps (its meta table), for resume, replay, report and export --------------

BASELINE_META = "therapist_baseline"  # a session started with a pre-session calibration keeps it here


def stored_baseline(store: SessionStore) -> Baseline | None:
    """The therapist baseline the session started with (``breathsync calibrate``), if any."""
    calibration = stored_calibration(store)
    return None if calibration is None else calibration.baseline


def stored_calibration(store: SessionStore) -> BaselineFile | None:
    """The pre-session calibration the session started with, with its source and time, if any."""
    text = store.meta(BASELINE_META)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, nested too deeply, or a number of over 4300 digits
        raise InputError(f"{store.path}: stored therapist baseline is not valid JSON") from None
    return baseline_file_from_dict(data, f"{store.path} (stored therapist baseline)")


def store_baseline(store: SessionStore, calibration: BaselineFile) -> None:
    store.set_meta(BASELINE_META, json.dumps(calibration.as_dict()))
