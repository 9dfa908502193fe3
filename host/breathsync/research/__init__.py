"""Research outputs from stored sessions: CSV / EDF+ / BIDS exports and the HTML report.

``load_session(path)`` reads a session file once into a ``Session`` (one time axis, drop-outs,
entrainment episodes); ``export_session`` and ``research.report.write_report`` turn it into
files. The formats are documented in docs/researcher-guide.md. pyedflib and matplotlib are
imported only where they are used (EDF+ export, ``research.report``), so importing this package
stays cheap.
"""

from .export import FORMATS, Format, default_out_dir, export_session
from .session import Episode, Gap, RoleData, Session, load_session

__all__ = [
    "FORMATS",
    "Episode",
    "Format",
    "Gap",
    "RoleData",
    "Session",
    "default_out_dir",
    "export_session",
    "load_session",
]
