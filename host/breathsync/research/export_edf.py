"""EDF+ export: both respiration channels on one time base at the session rate, with annotations.

Missing samples hold a documented fill value (``EDF_GAP_DIGITAL``) and an annotation; breath extrema,
nudges and their outcome, entrainment episodes, drop-outs and link events are annotations too.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..store import StoredNudge
from .output import file_head, write_all_or_nothing
from .session import RoleData, Session, common_grid, resample

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
_EDF_MAX_ANNOTATION_CHARS = 40  # edflib cuts longer texts


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
    for t_s, role, kind, detail in session.link_events:
        text = f"battery {role} {detail}" if kind == "battery" else f"link {role} {kind}"
        notes.append(Annotation(session.rel(t_s), None, text))
    # EDF+ onsets cannot precede the file start: what happened before the first sample (a strap's
    # 'connected' event) is kept at 0 with its real time in the text, not dropped.
    notes = [
        Annotation(n.onset_s, n.duration_s, _edf_text(n.text))
        if n.onset_s >= 0
        else Annotation(0.0, None, _edf_text(n.text, f" (at {n.onset_s:.2f} s)"))
        for n in notes
    ]
    return sorted(notes, key=lambda n: n.onset_s)


def _edf_text(text: str, suffix: str = "") -> str:
    """``text`` and ``suffix`` in the characters an annotation keeps: the text is cut (marked '~') so the suffix (a
    pre-zero event's real time) stays whole; edflib cut 'link therapist connect-failed (at -10.64 s)' after '(at'."""
    room = _EDF_MAX_ANNOTATION_CHARS - len(suffix)
    return (text if len(text) <= room else text[: room - 1] + "~") + suffix


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

    [path] = write_all_or_nothing(out_dir, write, lambda existing: _earlier_export(session, existing))
    return path


def _earlier_export(session: Session, path: Path) -> bool:
    """Whether ``path`` is an EDF file breathsync wrote for a session that started when ``session`` did."""
    header = file_head(path, 256)
    start = _edf_header(session)["startdate"]
    when = start.strftime("%d.%m.%y%H.%M.%S").encode()
    return header[:8] == b"0       " and b"breathsync" in header[88:168] and header[168:184] == when


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
