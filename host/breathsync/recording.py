"""Load one signal column from a CSV or CSV.gz recording with a header row."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import InputError

FloatArray = npt.NDArray[np.float64]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_column(path: str | Path, column: str = "resp") -> FloatArray:
    """Return ``column`` of a CSV recording as float64, one value per row.

    Raises InputError (one line) for a missing file, a missing column, an empty file or a
    row whose value is not a finite number (the row number is given, 1-based after the header).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise InputError(f"{path}: empty file (expected a header row)") from None
            names = [name.strip() for name in header]
            if column not in names:
                raise InputError(f"{path}: no column {column!r} (columns: {', '.join(names) or 'none'})")
            col = names.index(column)
            values: list[float] = []
            for row_number, row in enumerate(reader, start=1):
                if not row:
                    continue
                try:
                    value = float(row[col])
                except (IndexError, ValueError):
                    cell = row[col] if col < len(row) else ""
                    raise InputError(f"{path}: row {row_number}: {column!r} is not a number: {cell!r}") from None
                if not np.isfinite(value):
                    raise InputError(f"{path}: row {row_number}: {column!r} is not finite")
                values.append(value)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from None
    return np.asarray(values, dtype=np.float64)
