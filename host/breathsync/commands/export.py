"""breathsync export: a stored session as CSV, EDF+ or BIDS physio for analysis elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..research import FORMATS, default_out_dir, export_session, load_session

HELP = "export a stored session to CSV, EDF+ or BIDS physio (see docs/researcher-guide.md)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", help="session file (.sqlite) written by breathsync run")
    parser.add_argument("--format", required=True, choices=FORMATS, help="csv, edf or bids")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: beside the session; csv and bids in <session>_csv/ or <session>_bids/)",
    )
    parser.add_argument("--subject", metavar="LABEL", help="BIDS subject label (default: the session file name)")
    parser.add_argument("--bids-session", metavar="LABEL", help="BIDS session label (default: the start time)")


def run(args: argparse.Namespace) -> int:
    path = Path(args.session)
    session = load_session(path)
    out_dir = Path(args.out) if args.out else default_out_dir(path, args.format)
    for role in session.missing_roles:
        print(f"breathsync export: note: no {role} samples in this session; exporting the other strap", file=sys.stderr)
    files = export_session(session, args.format, out_dir, args.subject, args.bids_session)
    print(f"wrote {len(files)} file(s) to {out_dir}")
    for file in files:
        print(f"  {file}")
    return 0
