"""argparse types for numeric options and output files, so a bad value is a one-line usage error (exit 2).

``float()`` alone accepts ``nan``, ``inf`` and negatives: a nan deadline ends a command at once,
a negative seed is a numpy traceback, a negative scan time scans nothing and reports no straps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a time, a rate)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text!r})")
    return value


def seconds_or_forever(text: str) -> float:
    """A duration in seconds, finite and >= 0; 0 (the usual default) means until Ctrl-C."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, 0 = until Ctrl-C (got {text!r})")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (got {text!r})")
    return value


def file_path(text: str) -> Path:
    """A file to write: not empty (``Path("")`` would be the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty file name")
    return Path(text)
