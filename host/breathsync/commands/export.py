"""breathsync export: a stored session as CSV, EDF+ or BIDS physio for analysis elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..research import FORMATS, default_out_dir, export_session, load_session
from ..research.export import bids_notes, left_from_earlier_exports
from ..research.export_bids import check_bids_label
from ..research.output import out_dir_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", help="session file (.sqlite) written by breathsync run")
    parser.add_argument("--format", required=True, choices=FORMATS, help="csv, edf or bids")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: beside the session; csv and bids in <session>_csv/ or <session>_bids/)",
    )
    parser.add_argument(
        "--subject", metavar="LABEL", help="BIDS subject label, letters and digits (default: the session file name)"
    )
    parser.add_argument(
        "--bids-session", metavar="LABEL", help="BIDS session label, letters and digits (default: the start time)"
    )


def run(args: argparse.Namespace) -> int:
    path = Path(args.session)
    # Options first: a typo must not cost a session load (or leave anything behind).
    out_dir = out_dir_option(args.out)
    if args.format == "bids":
        check_bids_label(args.subject, "--subject")
        check_bids_label(args.bids_session, "--bids-session")
    else:
        for option, value in (("--subject", args.subject), ("--bids-session", args.bids_session)):
            if value is not None:
                # Not an error: the export asked for is still right; only the label has no place in it.
                print(f"breathsync export: note: {option} applies to --format bids only; ignored", file=sys.stderr)
    session = load_session(path)
    out_dir = out_dir or default_out_dir(path, args.format)
    for role in session.missing_roles:
        print(f"breathsync export: note: no {role} samples in this session; exporting the other strap", file=sys.stderr)
    subject, bids_session = (args.subject, args.bids_session) if args.format == "bids" else (None, None)
    if args.format == "bids":
        for note in bids_notes(session, out_dir, subject, bids_session):
            print(f"breathsync export: note: {note}", file=sys.stderr)
    files = export_session(session, args.format, out_dir, subject, bids_session)
    for earlier in left_from_earlier_exports(session, args.format, out_dir, subject, bids_session):
        print(f"breathsync export: note: {earlier} is from an earlier export, not this session", file=sys.stderr)
    print(f"wrote {len(files)} file(s) to {out_dir}")
    for file in files:
        print(f"  {file}")
    return 0
