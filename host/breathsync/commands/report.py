"""breathsync report: a self-contained HTML report and a PNG summary of a stored session."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..research import load_session
from ..research.output import out_dir_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session", help="session file (.sqlite) written by breathsync run")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: beside the session file)")


def run(args: argparse.Namespace) -> int:
    from ..research.report import default_report_dir, write_report  # matplotlib: only when reporting

    path = Path(args.session)
    out_dir = out_dir_option(args.out)  # before the slow part: a bad --out fails at once
    session = load_session(path)
    for role in session.missing_roles:
        print(f"breathsync report: note: no {role} samples in this session; synchrony cannot be shown", file=sys.stderr)
    files = write_report(session, out_dir or default_report_dir(path))
    print(f"report: {files.html}")
    print(f"summary figure: {files.png}")
    return 0
