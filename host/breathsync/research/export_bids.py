"""BIDS export: a minimal raw dataset (description, participants, per-strap physio, events, scans).

Subject = the dyad, ``recording-therapist`` / ``recording-client`` tell the two people apart; each
strap's samples are written at its own rate with ``n/a`` where one is missing (docs/researcher-guide.md).
Exporting several sessions into one folder grows one dataset.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import __version__
from ..errors import InputError
from ..link.clock import MAX_DRIFT_PPM
from ..small_files import read_small_file
from ..store import battery_level_pct
from .output import make_dirs, remove_empty_dirs, write_all_or_nothing
from .session import RoleData, Session

BIDS_VERSION = "1.10.0"
BIDS_TASK = "therapy"
BIDS_DATATYPE = "beh"
BIDS_UNITS = "a.u."
_LABEL_RE = re.compile(r"[^A-Za-z0-9]")
_VALID_LABEL_RE = re.compile(r"[A-Za-z0-9]+")


def bids_label(text: str) -> str:
    """A BIDS label (alphanumeric only) from free text; raises if nothing is left."""
    label = _LABEL_RE.sub("", text)
    if not label:
        raise InputError(
            f"cannot make a BIDS label from {text!r} (BIDS labels take only the ASCII letters A-Z, a-z and the "
            "digits 0-9): give one with --subject"
        )
    return label


def check_bids_label(value: str | None, option: str) -> None:
    """A label the user typed is used as given or refused, never quietly rewritten.

    (``bids_label`` derives the default from the file name; ``sub-x`` or ``../evil`` typed by a
    user turning into ``subx`` or ``evil`` would silently file the data under another subject.)
    None means "use the default".
    """
    if value is not None and not _VALID_LABEL_RE.fullmatch(value):
        raise InputError(
            f"{option} {value!r}: a BIDS label may contain only letters and digits (A-Z, a-z, 0-9), "
            f"without the sub-/ses- prefix; leave {option} out for the default"
        )


@dataclass(frozen=True)
class BidsNames:
    """Where a session lands in a BIDS dataset."""

    root: Path
    subject: str
    session: str

    @property
    def directory(self) -> Path:
        return self.root / f"sub-{self.subject}" / f"ses-{self.session}" / BIDS_DATATYPE

    @property
    def prefix(self) -> str:
        return f"sub-{self.subject}_ses-{self.session}_task-{BIDS_TASK}"

    def physio(self, role: str, suffix: str) -> Path:
        return self.directory / f"{self.prefix}_recording-{role}_{suffix}"

    def events(self, suffix: str) -> Path:
        return self.directory / f"{self.prefix}_{suffix}"


def default_bids_names(session: Session, root: Path, subject: str | None = None, ses: str | None = None) -> BidsNames:
    """Subject = the dyad (from the file name), session = the UTC start time (or 1)."""
    if ses is None:
        ses = (
            "1"
            if session.start_unix_s is None
            else datetime.fromtimestamp(session.start_unix_s, UTC).strftime("%Y%m%dT%H%M%S")
        )
    return BidsNames(root, bids_label(subject or session.path.stem), bids_label(ses))


def export_bids(session: Session, names: BidsNames) -> list[Path]:
    """A minimal BIDS raw dataset: description, participants, and per-role physio, events, scans.

    Exports into one dataset run one at a time (several sessions exported at once): each reads the
    dataset's participants.tsv and description and writes them back with its own subject added.
    """
    created = make_dirs(names.root)
    try:
        with _exclusive(names.root):
            return write_all_or_nothing(
                names.root, lambda directory: _bids_files(session, replace(names, root=directory), names.root)
            )
    except BaseException:
        remove_empty_dirs(created)
        raise


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold an advisory lock on ``directory`` (released when the process ends, whatever the cause)."""
    try:
        import fcntl
    except ImportError:  # not on Windows: no lock there
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # Some network and FUSE file systems have no locks: export as before, one at a time is then the
            # user's to keep.
        yield
    finally:
        os.close(fd)


def _bids_files(session: Session, names: BidsNames, dataset_root: Path) -> list[Path]:
    """The files of ``export_bids`` under ``names.root``; ``dataset_root`` is where they will end up."""
    names.directory.mkdir(parents=True, exist_ok=True)
    written = [_dataset_description(names.root, dataset_root), *_participants(names, dataset_root)]
    for role in session.roles.values():
        written += _bids_physio(session, role, names)
    written += _bids_events(session, names)
    written.append(_bids_scans(session, names, [p for p in written if p.name.endswith("_physio.tsv.gz")]))
    return written


def _write_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


DATASET_NAME = "breathsync therapist-client respiration"


def _dataset_description(root: Path, dataset_root: Path) -> Path:
    """The dataset's description, written under ``root``. What the dataset at ``dataset_root`` already says is kept
    (its name, authors, licence...: a dataset grows by one session per export and is not renamed after the
    latest); only the name earlier versions gave it after one session is replaced."""
    existing = _existing_json(dataset_root / "dataset_description.json")
    name = existing.get("Name")
    if not isinstance(name, str) or not name.strip() or name.startswith("breathsync session "):
        name = DATASET_NAME
    return _write_json(
        root / "dataset_description.json",
        {
            **existing,
            "Name": name,
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [
                {
                    "Name": "breathsync",
                    "Version": __version__,
                    "Description": "breathsync export --format bids (respiration of a therapist-client dyad)",
                }
            ],
        },
    )


MAX_DATASET_FILE_BYTES = 16 << 20  # participants.tsv of thousands of subjects is well under this


def _existing_json(path: Path) -> dict[str, Any]:
    """What the dataset's own JSON file ``path`` says ({} when there is none yet). A file that is not a JSON object
    is a one-line error: rewritten, a researcher's descriptions (a trailing comma from hand editing) would be lost."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, cannot write the output file there")
    if not path.exists():
        return {}
    try:  # bounded, and never a device (read whole, /dev/zero would never end)
        text = read_small_file(path, MAX_DATASET_FILE_BYTES, "BIDS dataset file").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, not a BIDS dataset file") from None
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}): mend it, or move it away to "
            "have a new one written; the dataset was left as it was"
        ) from None
    except (ValueError, RecursionError):
        raise InputError(f"{path}: not valid JSON; the dataset was left as it was") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: not a JSON object (BIDS); the dataset was left as it was")
    return loaded


PARTICIPANT_ID_DESCRIPTION = {
    "Description": "One therapist-client dyad; the two people are told apart by the recording-<therapist|client> "
    "entity of each physio file."
}


def _participants(names: BidsNames, dataset_root: Path) -> list[Path]:
    """participants.tsv and .json of the dataset at ``dataset_root``, grown by one subject, written under
    ``names.root``. The dataset's own columns and their descriptions are kept; the new row has n/a in them."""
    existing = dataset_root / "participants.tsv"
    rows = [["participant_id"]]
    if existing.is_dir():
        raise InputError(f"{existing}: is a directory, cannot write the output file there")
    if existing.exists():
        try:  # a spreadsheet's byte-order mark is not a column name
            text = read_small_file(existing, MAX_DATASET_FILE_BYTES, "participants table").decode("utf-8-sig")
            rows = [line.split("\t") for line in text.splitlines() if line] or rows
        except UnicodeDecodeError:
            raise InputError(f"{existing}: not a text file (cannot add the subject to it)") from None
        if rows[0][0] != "participant_id":
            raise InputError(f"{existing}: its first column is {rows[0][0]!r}, not participant_id (BIDS)")
    participant = f"sub-{names.subject}"
    if all(row[0] != participant for row in rows[1:]):
        rows.append([participant, *["n/a"] * (len(rows[0]) - 1)])
    tsv = names.root / "participants.tsv"
    tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    described = _existing_json(dataset_root / "participants.json")
    sidecar = _write_json(names.root / "participants.json", {"participant_id": PARTICIPANT_ID_DESCRIPTION, **described})
    return [tsv, sidecar]


PHYSIO_SUFFIXES = ("physio.tsv.gz", "physio.json")  # one strap's BIDS files
MEASURED_RATE_MIN_S = 60.0  # shorter recordings keep the nominal rate (the first seconds' dating dominates)


def counter_clock_line(
    counters: npt.NDArray[np.int64], host_t_s: npt.NDArray[np.float64], nominal_rate_hz: float
) -> tuple[float, float]:
    """(host time of the first counter, samples per host second) of the straight line through the stored
    (counter, host time) pairs: what a file with one start time and one rate (BIDS physio) must give.

    Not the first sample's own host time: a strap's first seconds are dated by a clock fit made from a few
    packets, up to ~60 ms late (more under load), differently for each strap (a phase shift between the two
    people). Not the nominal rate, over a recording long enough to measure it: a crystal 20 ppm off moves the
    last sample of an hour by 72 ms. A shorter one (those first seconds can be most of it), or a fit beyond any
    crystal's error (a reboot's downtime estimated wrong), keeps the nominal rate, under all the points."""
    if len(counters) == 0:
        return 0.0, nominal_rate_hz
    x = (counters - counters[0]).astype(np.float64)
    y = host_t_s - host_t_s[0]
    period_s = 1.0 / nominal_rate_hz
    if x[-1] >= MEASURED_RATE_MIN_S * nominal_rate_hz:
        keep = np.ones(len(x), dtype=bool)
        for _ in range(2):  # least squares, then again without the points far off it (those first seconds)
            intercept, slope = np.polynomial.polynomial.polyfit(x[keep], y[keep], 1)
            off = np.abs(y - (intercept + slope * x))
            keep = off <= 3.0 * 1.4826 * float(np.median(off)) + 1e-3
        if abs(slope / period_s - 1.0) <= MAX_DRIFT_PPM * 1e-6:
            return float(host_t_s[0] + intercept), round(1.0 / float(slope), 6)
    # The line at the nominal rate under every point: stored times err late, not early (as arrivals do).
    return float(host_t_s[0] + np.min(y - x * period_s)), nominal_rate_hz


def _bids_physio(session: Session, role: RoleData, names: BidsNames) -> list[Path]:
    """One row per strap sample from the first to the last counter; missing samples are n/a."""
    s = role.samples
    first = int(s.counters[0])
    rows = np.full(int(s.counters[-1]) - first + 1, -1, dtype=np.int64)
    rows[s.counters - first] = s.values
    tsv = names.physio(role.role, PHYSIO_SUFFIXES[0])
    with gzip.open(tsv, "wt", encoding="utf-8", newline="") as handle:
        handle.writelines("n/a\n" if v < 0 else f"{v}\n" for v in rows.tolist())
    strap = role.strap
    start_host_s, rate_hz = counter_clock_line(s.counters, s.host_t_s, float(role.rate_hz))
    sidecar: dict[str, Any] = {
        "SamplingFrequency": rate_hz,
        "StartTime": round(start_host_s - session.t0_host_s, 6),
        "Columns": ["respiratory"],
        "PhysioType": "generic",
        "Manufacturer": "breathsync",
        "ManufacturersModelName": "breathsync respiration chest strap",
        "respiratory": {
            "LongName": f"{role.role} respiration",
            "Description": f"Chest expansion of the {role.role}: raw 16-bit ADC counts (0-65535) of the "
            f"strap's stretch sensor, each the mean over one sample period; uncalibrated, larger = "
            f"more expanded. n/a = sample lost in a radio drop-out.",
            "Units": BIDS_UNITS,
        },
    }
    if strap is not None:
        sidecar["SoftwareVersions"] = strap.firmware
        sidecar["DeviceSerialNumber"] = strap.address
    return [tsv, _write_json(names.physio(role.role, PHYSIO_SUFFIXES[1]), sidecar)]


_EVENT_COLUMNS: dict[str, dict[str, Any]] = {
    "onset": {
        "Description": "Seconds since the session zero (the origin of StartTime in the physio sidecars).",
        "Units": "s",
    },
    "duration": {"Description": "Seconds; 0 for instantaneous events.", "Units": "s"},
    "trial_type": {
        "Description": "What happened.",
        "Levels": {
            "peak": "End of inspiration detected by the strap.",
            "trough": "End of expiration detected by the strap.",
            "nudge": "Haptic nudge sent to the therapist (their breathing followed the client's).",
            "therapist_follows": "Engine decisions: the therapist's breathing follows the client's.",
            "client_follows": "Engine decisions: the client's breathing follows the therapist's.",
            "dropout": "Strap samples lost (radio drop-out not closed by backfill).",
            "link": "Link event (connect, disconnect, ...); see value.",
            "battery": "The strap's battery level changed; value in percent.",
        },
    },
    "role": {"Description": "Whose strap the event belongs to: therapist, client or n/a."},
    "value": {
        "Description": "Breath depth in 14-bit counts (peak, trough), link event kind, battery level in percent, "
        "or a nudge's delivery (delivered: the therapist's strap confirmed it; not-delivered: it did not reach the "
        "strap; unconfirmed: it went out but no answer came, so it may have been felt)."
    },
    "decoupled": {"Description": "Nudges: whether the therapist stopped following within the efficacy window."},
    "decoupled_after_s": {"Description": "Nudges: seconds from the nudge until the therapist decoupled.", "Units": "s"},
}


def _bids_events(session: Session, names: BidsNames) -> list[Path]:
    rows = sorted(_event_rows(session), key=lambda row: float(row[0]))
    tsv = names.events("events.tsv")
    with tsv.open("w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(_EVENT_COLUMNS) + "\n")
        handle.writelines("\t".join(row) + "\n" for row in rows)
    sidecar = {"TaskName": BIDS_TASK, **_EVENT_COLUMNS}
    return [tsv, _write_json(names.events("events.json"), sidecar)]


def _bids_num(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _event_rows(session: Session) -> Iterable[list[str]]:
    na = "n/a"
    for role in session.roles.values():
        for e in role.events:
            yield [_bids_num(session.rel(e.host_t_s)), "0", e.kind, e.role, str(e.depth_counts), na, na]
    for nudge in session.nudges:
        duration = nudge.pattern_duration_s or 0.0
        yield [
            _bids_num(session.rel(nudge.t_s)),
            _bids_num(duration),
            "nudge",
            "therapist",
            _delivery(nudge.detail),
            _bids_num(nudge.decoupled),
            _bids_num(nudge.decoupled_after_s),
        ]
    for ep in session.episodes():
        kind = f"{ep.follower}_follows"
        yield [_bids_num(session.rel(ep.start_host_t_s)), _bids_num(ep.duration_s), kind, ep.follower, na, na, na]
    for gap in session.gaps():
        yield [_bids_num(session.rel(gap.start_host_t_s)), _bids_num(gap.duration_s), "dropout", gap.role, na, na, na]
    for t_s, who, kind, detail in session.link_events:
        level = battery_level_pct(detail) if kind == "battery" else None
        if level is not None:
            yield [_bids_num(session.rel(t_s)), "0", "battery", who or na, str(level), na, na]
        else:
            yield [_bids_num(session.rel(t_s)), "0", "link", who or na, kind or na, na, na]


def _delivery(detail: Mapping[str, Any]) -> str:
    """A nudge's delivery as the events' value: sessions before delivery was recorded (or a damaged one) say n/a."""
    delivered = detail.get("delivered", "absent")
    if delivered is None:
        return "unconfirmed"  # it went out, no answer came
    if isinstance(delivered, bool):
        return "delivered" if delivered else "not-delivered"
    return "n/a"


def _bids_scans(session: Session, names: BidsNames, physio: list[Path]) -> Path:
    """scans.tsv gives each physio file's wall-clock start: the only BIDS way to align them."""
    path = names.directory.parent / f"sub-{names.subject}_ses-{names.session}_scans.tsv"
    lines = ["filename\tacq_time"]
    for tsv in physio:
        sidecar = json.loads(tsv.with_name(tsv.name.replace(".tsv.gz", ".json")).read_text(encoding="utf-8"))
        start = None if session.start_unix_s is None else session.start_unix_s + float(sidecar["StartTime"])
        stamp = "n/a" if start is None else datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        lines.append(f"{BIDS_DATATYPE}/{tsv.name}\t{stamp}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
