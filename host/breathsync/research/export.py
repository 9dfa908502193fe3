"""Session exports for analysis elsewhere: CSV (everything), EDF+ (signals + annotations), BIDS physio.

The formats and every column are described in docs/researcher-guide.md. Conventions shared by
all three: times are seconds since the session zero (the first stored sample, see
``research.session``), raw strap values stay raw u16 ADC counts (no filtering, no scaling that
could not be undone), and missing samples are never invented: CSV simply has no row, EDF+
holds a documented fill value plus an annotation, BIDS writes ``n/a``. Every export is written
all or nothing (``research.output``): a failed run leaves no partial export behind.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .. import __version__
from ..errors import InputError
from ..link.clock import MAX_DRIFT_PPM
from ..store import StoredNudge
from .output import make_dirs, remove_empty_dirs, write_all_or_nothing
from .session import RoleData, Session, common_grid, resample

Format = Literal["csv", "edf", "bids"]
FORMATS: tuple[Format, ...] = ("csv", "edf", "bids")
Cell = str | int | float | bool | None

# -- CSV ----------------------------------------------------------------------------------------

SAMPLE_COLUMNS = ("counter", "host_t_s", "session_t_s", "value")
EVENT_COLUMNS = (
    "role",
    "kind",
    "counter",
    "confirmed_counter",
    "depth_counts",
    "interval_samples",
    "host_t_s",
    "session_t_s",
)
LINK_COLUMNS = ("host_t_s", "session_t_s", "role", "kind", "detail")
DROPOUT_COLUMNS = (
    "role",
    "first_counter",
    "last_counter",
    "missing_samples",
    "start_host_t_s",
    "start_session_t_s",
    "duration_s",
)
EFFICACY_PREFIX = "efficacy."


def format_cell(value: Cell) -> str:
    """One CSV cell: floats round-trip exactly (repr), booleans as true/false, null as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def parse_cell(text: str) -> Cell:
    """Inverse of ``format_cell`` for the values breathsync stores (numbers, booleans, words)."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Cell]:
    """Nested dicts become dotted columns (``pattern.on_ms``); lists become a JSON cell."""
    out: dict[str, Cell] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def unflatten(row: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    """Inverse of ``flatten`` for the columns starting with ``prefix`` (prefix removed)."""
    out: dict[str, Any] = {}
    for column, text in row.items():
        if not column.startswith(prefix):
            continue
        parts = column[len(prefix) :].split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        value = parse_cell(text)
        if isinstance(value, str) and value[:1] == "[":
            value = json.loads(value)
        node[parts[-1]] = value
    return out


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_cell(v) for v in row])
    return path


def _union_columns(records: Iterable[Mapping[str, Cell]], first: Sequence[str] = ()) -> list[str]:
    """Columns of heterogeneous records: ``first`` in order, the rest sorted."""
    seen: set[str] = set()
    for record in records:
        seen.update(record)
    return [c for c in first if c in seen] + sorted(seen - set(first))


def export_csv(session: Session, out_dir: Path) -> list[Path]:
    """One CSV per stream plus ``session.json``; returns the files written."""
    return write_all_or_nothing(out_dir, lambda directory: _csv_files(session, directory))


def samples_csv_name(role: str) -> str:
    return f"samples_{role}.csv"


def _csv_files(session: Session, out_dir: Path) -> list[Path]:
    written = [_samples_csv(session, role, out_dir / samples_csv_name(role.role)) for role in session.roles.values()]
    written.append(_events_csv(session, out_dir / "events.csv"))
    written.append(_nudges_csv(session, out_dir / "nudges.csv"))
    written.append(_states_csv(session, out_dir / "states.csv"))
    written.append(_link_csv(session, out_dir / "link_events.csv"))
    written.append(_dropouts_csv(session, out_dir / "dropouts.csv"))
    written.append(_session_json(session, out_dir / "session.json", [p.name for p in written]))
    return written


def _samples_csv(session: Session, role: RoleData, path: Path) -> Path:
    s = role.samples
    rows = (
        (int(c), float(t), float(t) - session.t0_host_s, int(v))
        for c, t, v in zip(s.counters, s.host_t_s, s.values, strict=True)
    )
    return _write_csv(path, SAMPLE_COLUMNS, rows)


def _events_csv(session: Session, path: Path) -> Path:
    events = sorted((e for r in session.roles.values() for e in r.events), key=lambda e: e.host_t_s)
    rows = (
        (
            e.role,
            e.kind,
            e.counter,
            e.confirmed_counter,
            e.depth_counts,
            e.interval_samples,
            e.host_t_s,
            session.rel(e.host_t_s),
        )
        for e in events
    )
    return _write_csv(path, EVENT_COLUMNS, rows)


def _nudges_csv(session: Session, path: Path) -> Path:
    records: list[dict[str, Cell]] = []
    for nudge in session.nudges:
        record: dict[str, Cell] = {"id": nudge.id, "host_t_s": nudge.t_s, "session_t_s": session.rel(nudge.t_s)}
        record.update(flatten(nudge.detail))
        # Explicit, because an outcome still pending and an empty outcome look alike otherwise.
        record["evaluated"] = nudge.efficacy is not None
        record.update(flatten(nudge.efficacy or {}, EFFICACY_PREFIX))
        records.append(record)
    columns = _union_columns(records, ("id", "host_t_s", "session_t_s"))
    columns = [c for c in columns if c != "evaluated"] + ["evaluated"] if records else columns
    columns = [c for c in columns if not c.startswith(EFFICACY_PREFIX)] + [
        c for c in columns if c.startswith(EFFICACY_PREFIX)
    ]
    if not columns:
        columns = ["id", "host_t_s", "session_t_s"]
    return _write_csv(path, columns, ([r.get(c) for c in columns] for r in records))


def _states_csv(session: Session, path: Path) -> Path:
    records: list[dict[str, Cell]] = []
    for state in session.states:
        record: dict[str, Cell] = {"host_t_s": state.t_s, "session_t_s": session.rel(state.t_s)}
        record.update(flatten(state.fields))
        records.append(record)
    columns = _union_columns(records, ("host_t_s", "session_t_s", "t_s", "decision")) or ["host_t_s", "session_t_s"]
    return _write_csv(path, columns, ([r.get(c) for c in columns] for r in records))


def _link_csv(session: Session, path: Path) -> Path:
    rows = ((t, session.rel(t), role, kind, detail) for t, role, kind, detail in session.link_events)
    return _write_csv(path, LINK_COLUMNS, rows)


def _dropouts_csv(session: Session, path: Path) -> Path:
    rows = (
        (
            g.role,
            g.first_counter,
            g.last_counter,
            g.missing_samples,
            g.start_host_t_s,
            session.rel(g.start_host_t_s),
            g.duration_s,
        )
        for g in session.gaps()
    )
    return _write_csv(path, DROPOUT_COLUMNS, rows)


def _session_json(session: Session, path: Path, files: list[str]) -> Path:
    info = {
        "session_file": session.path.name,
        "breathsync_version": __version__,
        "t0_host_s": session.t0_host_s,
        "start_unix_s": session.start_unix_s,
        "start_utc": _iso(session.start_unix_s),
        "duration_s": session.duration_s,
        "meta": session.meta,
        "config": session.config,
        "therapist_calibration": None if session.calibration is None else session.calibration.as_dict(),
        "straps": [
            {
                "role": r.role,
                "rate_hz": r.rate_hz,
                "samples": len(r.samples.counters),
                "missing_samples": r.missing_samples,
                "address": r.strap.address if r.strap else None,
                "name": r.strap.name if r.strap else None,
                "firmware": r.strap.firmware if r.strap else None,
                "protocol_version": r.strap.protocol_version if r.strap else None,
            }
            for r in session.roles.values()
        ],
        "missing_roles": session.missing_roles,
        "files": files,
    }
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return path


def _iso(unix_s: float | None) -> str | None:
    return None if unix_s is None else datetime.fromtimestamp(unix_s, UTC).isoformat()


# -- EDF+ ---------------------------------------------------------------------------------------

# Raw u16 counts are stored losslessly up to the 16-bit digital range: physical -1 .. 65535
# maps onto digital -32768 .. 32767 (1.0000153 counts per digital step, so a value read back is
# within 0.51 counts of the original). Physical -1 -- the digital minimum -- is below any
# value an ADC can produce and marks samples that are missing (EDF has no NaN).
EDF_PHYSICAL_MIN = -1.0
EDF_PHYSICAL_MAX = 65535.0
EDF_DIGITAL_MIN = -32768
EDF_DIGITAL_MAX = 32767
EDF_GAP_DIGITAL = EDF_DIGITAL_MIN
EDF_MAX_ANNOTATION_SIGNALS = 64
_EDF_MAX_ANNOTATION_CHARS = 40  # edflib truncates longer texts


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation: seconds since the file start; duration None = instantaneous."""

    onset_s: float
    duration_s: float | None
    text: str


def to_digital(values: np.ndarray[Any, np.dtype[np.float64]]) -> np.ndarray[Any, np.dtype[np.int32]]:
    """Physical counts (NaN = missing) to EDF digital values, gaps at the digital minimum."""
    scale = (EDF_DIGITAL_MAX - EDF_DIGITAL_MIN) / (EDF_PHYSICAL_MAX - EDF_PHYSICAL_MIN)
    digital = np.round((np.nan_to_num(values, nan=EDF_PHYSICAL_MIN) - EDF_PHYSICAL_MIN) * scale) + EDF_DIGITAL_MIN
    digital = np.clip(digital, EDF_DIGITAL_MIN + 1, EDF_DIGITAL_MAX)
    digital[np.isnan(values)] = EDF_GAP_DIGITAL
    result: np.ndarray[Any, np.dtype[np.int32]] = digital.astype(np.int32)
    return result


def edf_annotations(session: Session) -> list[Annotation]:
    """Breath extrema, nudges with their outcome, entrainment episodes, drop-outs and link events."""
    notes = [
        Annotation(session.rel(e.host_t_s), None, f"{e.kind} {e.role}")
        for r in session.roles.values()
        for e in r.events
    ]
    for nudge in session.nudges:
        outcome = f"nudge {_outcome(nudge)}"
        notes.append(Annotation(session.rel(nudge.t_s), nudge.pattern_duration_s, outcome))
    for episode in session.episodes():
        text = "therapist follows client" if episode.follower == "therapist" else "client follows therapist"
        notes.append(Annotation(session.rel(episode.start_host_t_s), episode.duration_s, text))
    for gap in session.gaps():
        notes.append(Annotation(session.rel(gap.start_host_t_s), gap.duration_s, f"dropout {gap.role}"))
    for t_s, role, kind, _detail in session.link_events:
        notes.append(Annotation(session.rel(t_s), None, f"link {role} {kind}"))
    # EDF+ onsets cannot precede the file start: what happened before the first sample (a strap's
    # 'connected' event) is kept at 0 with its real time in the text, not dropped.
    notes = [n if n.onset_s >= 0 else Annotation(0.0, None, f"{n.text} (at {n.onset_s:.2f} s)") for n in notes]
    return sorted(notes, key=lambda n: n.onset_s)


def _outcome(nudge: StoredNudge) -> str:
    if nudge.decoupled is None:
        return "pending"
    return "decoupled" if nudge.decoupled else "not decoupled"


def export_edf(session: Session, out_dir: Path) -> Path:
    """Both respiration channels on one time base at the session rate, with EDF+ annotations."""
    rate = session.rate_hz
    grid = common_grid(session)
    n_records = math.ceil(len(grid) / rate)
    padded = np.full(n_records * rate, np.nan)
    channels = []
    for role in session.roles.values():
        signal = padded.copy()
        signal[: len(grid)] = resample(role, grid)
        channels.append(to_digital(signal))
    notes = edf_annotations(session)
    annotation_signals = math.ceil(len(notes) / n_records) + 1
    if annotation_signals > EDF_MAX_ANNOTATION_SIGNALS:
        raise InputError(f"{session.path}: {len(notes)} annotations do not fit an EDF+ file of {n_records} s")

    def write(directory: Path) -> list[Path]:
        path = directory / f"{session.path.stem}.edf"
        _write_edf(path, session, rate, channels, notes, annotation_signals)
        return [path]

    [path] = write_all_or_nothing(out_dir, write)
    return path


def _write_edf(
    path: Path,
    session: Session,
    rate: int,
    channels: list[np.ndarray[Any, np.dtype[np.int32]]],
    notes: list[Annotation],
    annotation_signals: int,
) -> None:
    import pyedflib
    from pyedflib._extensions._pyedflib import set_starttime_subsecond

    writer = pyedflib.EdfWriter(str(path), len(channels), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        header = _edf_header(session)
        start = header["startdate"]
        header["startdate"] = start.replace(microsecond=0)  # pyedflib 0.1.42 writes microseconds x 100, not x 10
        writer.setHeader(header)
        writer.setSignalHeaders([_edf_signal_header(role, rate) for role in session.roles.values()])
        writer.set_number_of_annotation_signals(annotation_signals)
        # EDF+ keeps the start's fraction of a second in the first data record's time stamp, in units of
        # 100 ns: without it every sample and annotation would sit up to a second early on the wall clock.
        if set_starttime_subsecond(writer.handle, start.microsecond * 10) != 0:
            raise InputError(f"{path}: the EDF writer refused the start's fraction of a second")
        writer.writeSamples(channels, digital=True)
        for note in notes:
            writer.writeAnnotation(note.onset_s, -1 if note.duration_s is None else note.duration_s, note.text)
    finally:
        writer.close()
    # The EDF library does not report failed writes (a full disk, a file size limit): the cut file would
    # replace a good one.
    if path.stat().st_size != _edf_size_in_header(path):
        raise OSError(errno.EIO, "the EDF file came out incomplete: disk full, or a file size limit?", str(path))


def _edf_size_in_header(path: Path) -> int:
    """The file size an EDF(+) header promises: header bytes + records x (2 bytes x samples per record)."""
    with path.open("rb") as handle:
        fixed = handle.read(256)
        try:
            header_bytes, n_records, n_signals = int(fixed[184:192]), int(fixed[236:244]), int(fixed[252:256])
        except ValueError:
            return -1  # not even the fixed header was written
        handle.seek(256 + n_signals * 216)  # the per-signal fields before 'samples in each data record'
        per_record = handle.read(8 * n_signals)
    try:
        samples = sum(int(per_record[8 * i : 8 * i + 8]) for i in range(n_signals))
    except ValueError:
        return -1
    return header_bytes + n_records * 2 * samples


def _edf_header(session: Session) -> dict[str, Any]:
    """Patient and recording identification left anonymous (EDF+ 'X' subfields)."""
    start = datetime.fromtimestamp(session.start_unix_s or 0.0, UTC).replace(tzinfo=None)
    return {
        "technician": "",
        "recording_additional": "",
        "patientname": "",
        "patient_additional": "",
        "patientcode": "",
        "equipment": "breathsync",
        "admincode": "",
        "sex": None,
        "startdate": start,
        "birthdate": "",
    }


def _edf_signal_header(role: RoleData, rate: int) -> dict[str, Any]:
    strap = role.strap
    transducer = "respiration chest strap"
    if strap is not None:
        transducer += f" {strap.name} fw {strap.firmware}"
    return {
        "label": f"Resp {role.role}"[:16],
        "dimension": "counts",
        "sample_frequency": rate,
        "physical_min": EDF_PHYSICAL_MIN,
        "physical_max": EDF_PHYSICAL_MAX,
        "digital_min": EDF_DIGITAL_MIN,
        "digital_max": EDF_DIGITAL_MAX,
        "transducer": transducer[:80],
        "prefilter": f"ADC mean over 1/{role.rate_hz} s; linear resampling to {rate} Hz"[:80],
    }


# -- BIDS physio --------------------------------------------------------------------------------

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
        raise InputError(f"cannot make a BIDS label from {text!r} (needs letters or digits)")
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
        fcntl.flock(fd, fcntl.LOCK_EX)
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
    existing: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads((dataset_root / "dataset_description.json").read_text(encoding="utf-8"))
        existing = loaded if isinstance(loaded, dict) else {}
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
        try:
            rows = [line.split("\t") for line in existing.read_text(encoding="utf-8").splitlines() if line] or rows
        except UnicodeDecodeError:
            raise InputError(f"{existing}: not a text file (cannot add the subject to it)") from None
        if rows[0][0] != "participant_id":
            raise InputError(f"{existing}: its first column is {rows[0][0]!r}, not participant_id (BIDS)")
    participant = f"sub-{names.subject}"
    if all(row[0] != participant for row in rows[1:]):
        rows.append([participant, *["n/a"] * (len(rows[0]) - 1)])
    tsv = names.root / "participants.tsv"
    tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    described: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, RecursionError):
        loaded = json.loads((dataset_root / "participants.json").read_text(encoding="utf-8"))
        described = loaded if isinstance(loaded, dict) else {}
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
        },
    },
    "role": {"Description": "Whose strap the event belongs to: therapist, client or n/a."},
    "value": {
        "Description": "Breath depth in 14-bit counts (peak, trough), link event kind, or a nudge's delivery "
        "(delivered: the therapist's strap confirmed it; not-delivered: it did not reach the strap)."
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
            _delivery(nudge.delivered),
            _bids_num(nudge.decoupled),
            _bids_num(nudge.decoupled_after_s),
        ]
    for ep in session.episodes():
        kind = f"{ep.follower}_follows"
        yield [_bids_num(session.rel(ep.start_host_t_s)), _bids_num(ep.duration_s), kind, ep.follower, na, na, na]
    for gap in session.gaps():
        yield [_bids_num(session.rel(gap.start_host_t_s)), _bids_num(gap.duration_s), "dropout", gap.role, na, na, na]
    for t_s, who, kind, _ in session.link_events:
        yield [_bids_num(session.rel(t_s)), "0", "link", who or na, kind or na, na, na]


def _delivery(delivered: bool | None) -> str:
    """A nudge's delivery as the events' value: sessions before delivery was recorded say n/a."""
    return "n/a" if delivered is None else ("delivered" if delivered else "not-delivered")


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


# -- dispatch -----------------------------------------------------------------------------------


def default_out_dir(session_path: Path, fmt: Format) -> Path:
    """EDF+ lands beside the session file; CSV and BIDS get their own directory there."""
    if fmt == "edf":
        return session_path.parent
    return session_path.parent / f"{session_path.stem}_{fmt}"


def left_from_earlier_exports(
    session: Session, fmt: Format, out_dir: Path, subject: str | None = None, bids_session: str | None = None
) -> list[Path]:
    """Files this export would write for a strap the session has no samples from, already in ``out_dir``: an
    earlier export's, beside this one's (a glob of ``samples_*.csv`` would read another session's client)."""
    if fmt == "csv":
        candidates = [out_dir / samples_csv_name(role) for role in session.missing_roles]
    elif fmt == "bids":
        names = default_bids_names(session, out_dir, subject, bids_session)
        candidates = [names.physio(role, suffix) for role in session.missing_roles for suffix in PHYSIO_SUFFIXES]
    else:
        candidates = []
    return [path for path in candidates if path.exists()]


def export_session(
    session: Session,
    fmt: Format,
    out_dir: Path,
    subject: str | None = None,
    bids_session: str | None = None,
) -> list[Path]:
    """Write ``session`` in ``fmt`` under ``out_dir``; returns the files written.

    ``subject`` and ``bids_session`` (BIDS only) must be valid BIDS labels; None = the default.
    """
    if fmt == "csv":
        return export_csv(session, out_dir)
    if fmt == "edf":
        return [export_edf(session, out_dir)]
    if fmt == "bids":
        check_bids_label(subject, "--subject")
        check_bids_label(bids_session, "--bids-session")
        return export_bids(session, default_bids_names(session, out_dir, subject, bids_session))
    raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
