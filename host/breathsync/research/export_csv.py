"""CSV export: the stored tables as plain CSV files plus ``session.json`` (docs/researcher-guide.md; ``late`` and
``arrivals``, which only a replay of the session reads, stay in the store).

Times are seconds since the session zero, raw strap values stay raw u16 ADC counts, and a missing
sample simply has no row. Written all or nothing (``research.output``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from .output import file_head, write_all_or_nothing
from .session import RoleData, Session

Cell = str | int | float | bool | None

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
    """One CSV per stream plus ``session.json``; returns the files written. Files already in ``out_dir`` are
    replaced only when its ``session.json`` says they are an earlier export of this session."""
    earlier = _earlier_export(session, out_dir)  # read once, before the files are written
    return write_all_or_nothing(out_dir, lambda directory: _csv_files(session, directory), lambda p: p.name in earlier)


def _earlier_export(session: Session, out_dir: Path) -> set[str]:
    """The files in ``out_dir`` an earlier CSV export of ``session`` wrote (its session.json lists them)."""
    text = file_head(out_dir / "session.json", MAX_SESSION_JSON_BYTES)
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), or nested too deeply: someone else's
        return set()
    if not isinstance(info, dict) or "breathsync_version" not in info:
        return set()
    if info.get("session_file") != session.path.name or info.get("start_unix_s") != session.start_unix_s:
        return set()
    files = info.get("files")
    return (
        {"session.json", *(name for name in files if isinstance(name, str))}
        if isinstance(files, list)
        else {"session.json"}
    )


MAX_SESSION_JSON_BYTES = 1 << 20


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
