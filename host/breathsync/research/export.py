"""Session exports for analysis elsewhere: CSV (everything), EDF+ (signals + annotations), BIDS physio.

This module chooses the format and the output place; each format is its own module (``export_csv``,
``export_edf``, ``export_bids``).

The formats and every column are described in docs/researcher-guide.md. Conventions shared by
all three: times are seconds since the session zero (the first stored sample, see
``research.session``), raw strap values stay raw u16 ADC counts (no filtering, no scaling that
could not be undone), and missing samples are never invented: CSV simply has no row, EDF+
holds a documented fill value plus an annotation, BIDS writes ``n/a``. Every export is written
all or nothing (``research.output``): a failed run leaves no partial export behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import InputError
from .export_bids import PHYSIO_SUFFIXES, check_bids_label, default_bids_names, export_bids
from .export_csv import export_csv, samples_csv_name
from .export_edf import export_edf
from .session import Session

Format = Literal["csv", "edf", "bids"]
FORMATS: tuple[Format, ...] = ("csv", "edf", "bids")


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


def bids_notes(
    session: Session, out_dir: Path, subject: str | None = None, bids_session: str | None = None
) -> list[str]:
    """What a BIDS export of ``session`` into the dataset at ``out_dir`` would meet there, said before it is written:
    the same subject and session (it is replaced), or, with the subject taken from the file name, a subject another
    file's name also gives ('sim_A' and 'simA' both give 'simA': two dyads would pass for one)."""
    names = default_bids_names(session, out_dir, subject, bids_session)
    if names.directory.is_dir():
        return [
            f"sub-{names.subject}/ses-{names.session} is already in the dataset: replaced (the same subject and start "
            "second; --bids-session tells two sessions apart)"
        ]
    if subject is None and (names.root / f"sub-{names.subject}").is_dir():
        return [
            f"subject {names.subject!r} (from the file name {session.path.name}) is already in the dataset: this "
            "session is added to it; --subject names the dyad, if it is another"
        ]
    return []


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
