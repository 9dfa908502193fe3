"""Load one signal column from a CSV or CSV.gz recording with a header row, and check its rate."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import math
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from . import opensignals
from .errors import InputError, clipped
from .quantiles import small_median

FloatArray = npt.NDArray[np.float64]

# A respiration recording's sampling rate: below 4 Hz a fast breath has too few samples to time it; above
# 10 kHz is not a respiration signal. Mistyped rates (0.001 for 1000) otherwise stretch a file to days.
INPUT_RATE_RANGE_HZ = (4.0, 10_000.0)
MAX_RECORDING_S = 48 * 3600.0  # longer is a wrong --rate or a file to split: the strap simulation holds it all


def check_input_rate(sampling_rate: float, n_samples: int | None = None) -> float:
    """``sampling_rate`` (the ``--rate`` of a recording) if plausible, else a one-line ``InputError``."""
    lo, hi = INPUT_RATE_RANGE_HZ
    if not (isinstance(sampling_rate, int | float) and math.isfinite(sampling_rate) and lo <= sampling_rate <= hi):
        raise InputError(f"--rate must be a sampling rate within {lo:g}-{hi:g} Hz (got {sampling_rate})")
    if n_samples is not None and n_samples / sampling_rate > MAX_RECORDING_S:
        hours = n_samples / sampling_rate / 3600.0
        raise InputError(
            f"{n_samples} samples at --rate {sampling_rate:g} Hz would be {hours:.0f} h of breathing "
            f"(at most {MAX_RECORDING_S / 3600:.0f} h): is the rate right?"
        )
    return float(sampling_rate)


def stated_sampling_rate(path: str | Path) -> float | None:
    """The sampling rate a recording states in its own header (an OpenSignals export), else None. A plain CSV states
    none, and a pipe is not looked into (it can be read only once, by ``read_recording``)."""
    path = Path(path)
    _check_exists(path)
    if not path.is_file():
        return None
    try:
        with _open_text(path) as handle:
            if not _first_line(handle, path).lstrip().startswith(opensignals.MARK):
                return None
            return opensignals.stated_sampling_rate(handle, path)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None


_MAX_HEADER_CHARS = 1 << 20  # a header row is at most this long (a stream without line ends is not read to its end)
_MAX_BLANK_LINES = 1000  # blank lines before the header row that are passed over


def _first_line(handle: io.TextIOBase, path: Path) -> str:
    """The first line that is not blank ('' at the end of the file). A one-line InputError for a binary file and for
    a line longer than _MAX_HEADER_CHARS (/dev/zero was read until the memory ran out)."""
    line = ""
    for _ in range(_MAX_BLANK_LINES):
        line = handle.readline(_MAX_HEADER_CHARS)
        if sum(not (c.isprintable() or c in "\t\r\n") for c in line[:200]) > 2:
            raise InputError(f"{path}: not a text (CSV) file")
        if len(line) >= _MAX_HEADER_CHARS and not line.endswith(("\n", "\r")):
            raise InputError(f"{path}: no line end in its first {_MAX_HEADER_CHARS} characters: not a CSV file")
        if line.strip() or not line:
            break
    return line


def _check_exists(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a recording")
    if not path.exists():  # a pipe or device (/dev/stdin, <(zcat ...)) is fine: only a regular file is seekable
        raise InputError(f"{path}: no such file")


def _open_text(path: Path) -> io.TextIOBase:
    # utf-8-sig: spreadsheet exports start with a byte-order mark, which would otherwise hide in the first name.
    # Undecodable bytes (a Latin-1 degree sign in some other column's name) become U+FFFD instead of refusing
    # the file: numbers are ASCII, and a damaged value still fails as 'not a number'.
    raw: gzip.GzipFile | io.BufferedReader
    if path.suffix.lower() == ".gz":
        raw = gzip.GzipFile(path, "rb")
    else:
        if path.is_file():
            with open(path, "rb") as head:
                if head.read(2) == GZIP_MAGIC:
                    raise InputError(f"{path}: is gzip-compressed; name it {path.name}.gz (or decompress it)")
        raw = open(path, "rb")  # noqa: SIM115 (handed to the text wrapper, which closes it)
    start = raw.peek(2)[:2]
    encoding = "utf-16" if start in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"  # UTF-16: 'Unicode text'
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")


def _header(header_line: str, column: str, separator: str | None = None) -> tuple[str, list[str]]:
    """The separator and column names: ``separator`` if the file named it, else the first of comma, tab (a .tsv,
    a spreadsheet's text export) and semicolon (a decimal-comma locale) whose split of the header holds
    ``column``, else the first one present."""
    present = [separator] if separator else [c for c in (",", "\t", ";") if c in header_line] or [","]
    for delimiter in present:
        names = [name.strip() for name in next(csv.reader([header_line], delimiter=delimiter))]
        if any(name.casefold() == column.casefold() for name in names):
            return delimiter, names
    return present[0], [name.strip() for name in next(csv.reader([header_line], delimiter=present[0]))]


GZIP_MAGIC = b"\x1f\x8b"


# How a missing sample is written: pandas writes NaN as an empty cell, BIDS as n/a, spreadsheets #N/A,
# databases NULL, C's printf -nan; any spelling of NaN counts (compared in lower case).
MISSING_CELLS = frozenset({"", "nan", "n/a", "na", "#n/a", "#na", "null", "none", "<na>"})


def _column_index(path: Path, names: list[str], column: str) -> int:
    """Where ``column`` is: its exact name, else the one name equal to it but for case (BIDMC writes RESP)."""
    matches = [i for i, name in enumerate(names) if name == column]
    if not matches:
        matches = [i for i, name in enumerate(names) if name.casefold() == column.casefold()]
    if not matches:
        if names and all(_is_number(name) for name in names):
            raise InputError(
                f"{path}: no header row (its first line is numbers); add one naming the columns, e.g. {column}"
            )
        shown = ", ".join(repr(n) if not n.isprintable() else n for n in names[:20]) or "none"
        more = f", ... ({len(names)} in all)" if len(names) > 20 else ""
        raise InputError(f"{path}: no column {column!r} (columns: {clipped(shown + more, 200)})")
    if len(matches) > 1:
        raise InputError(f"{path}: column {column!r} appears {len(matches)} times in the header")
    return matches[0]


def _number(text: str) -> float:
    """float(), without the digit grouping of Python literals ('1_000'): no recorder writes it, and a cell that
    holds it is more likely two numbers run together than a thousand."""
    if "_" in text:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def _is_number(text: str) -> bool:
    try:
        _number(text)
    except ValueError:
        return False
    return True


def read_column(
    path: str | Path, column: str = "resp", missing_ok: bool = False, sampling_rate: float | None = None
) -> FloatArray:
    """Return ``column`` of a CSV recording as float64, one value per row (``read_recording`` for details)."""
    return read_recording(path, column, missing_ok, sampling_rate).values


@dataclass(frozen=True)
class Recording:
    """One signal column, and the file's time column when it has one that reads as numbers."""

    values: FloatArray
    time: FloatArray | None  # as written (seconds or milliseconds: ``rows_on_the_time_grid`` works it out)
    time_column: str | None


def read_recording(
    path: str | Path, column: str = "resp", missing_ok: bool = False, sampling_rate: float | None = None
) -> Recording:
    """Return ``column`` of a CSV recording as float64, one value per row, and its time column if any.

    Raises InputError (one line) for a missing file, a missing column, an empty file, an empty row
    before the end (trailing empty lines are fine), a row whose value is not a finite number, a row
    without the column's cell, or a row with more cells than the header (a decimal comma, as in
    ``-0,298``, would otherwise split one value in two and be read as ``-0``); rows are numbered
    1-based after the header. Separators: ``_header``; encodings: ``_open_text``.
    With ``missing_ok``, a missing sample (an empty row or cell, any NaN spelling, ``MISSING_CELLS``) is
    NaN instead of an error: the caller decides what a gap means (``replay``: a drop-out). Infinities
    stay errors. The time column (``TIME_COLUMNS``) is read while its cells are finite numbers.
    A file that states its own rate (an OpenSignals header) must agree with ``sampling_rate`` when one is given.
    """
    path = Path(path)
    _check_exists(path)
    try:
        with _open_text(path) as handle:
            header_line = _first_line(handle, path)
            if header_line.lstrip().startswith(opensignals.MARK):  # a BITalino's export: no header row
                found = opensignals.read_header(handle, path, column)
                delimiter, names, column, said = "\t", found.names, found.column, found.sampling_rate_hz
                if said is not None and sampling_rate is not None and abs(said - sampling_rate) > 1e-6 * sampling_rate:
                    raise InputError(
                        f"{path}: its header says it was recorded at {said:g} Hz, not {sampling_rate:g} Hz"
                    )
            else:
                # A spreadsheet may name its separator in a first line of its own ('sep=;'), before the header.
                named = header_line.strip()
                separator = named[4:] if len(named) == 5 and named[:4].casefold() == "sep=" else None
                if separator is not None:
                    header_line = _first_line(handle, path)
                if not header_line.strip():
                    raise InputError(f"{path}: empty file (expected a header row)")
                delimiter, names = _header(header_line, column, separator)
            col = _column_index(path, names, column)
            tcol = next((i for i, name in enumerate(names) if name.casefold() in TIME_COLUMNS and i != col), None)
            rows = _Rows(path, column, names, col, tcol, missing_ok, delimiter)
            while chunk := _whole_lines(handle):
                if '"' in chunk or "\x00" in chunk:  # quoted cells may span lines
                    rows.add_checked(csv.reader(itertools.chain(_lines(chunk), handle), delimiter=delimiter))
                    break
                if not rows.add_plain(chunk, delimiter):
                    rows.add_checked(csv.reader(_lines(chunk), delimiter=delimiter))
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from None
    recording = rows.recording()
    if len(recording.values) == 0:  # it said 'a respiration signal needs finite values' (an outside probe)
        if rows.rows:  # blank rows at a file's end are no samples: a file of nothing else has none
            plural = "s" if rows.rows != 1 else ""
            raise InputError(f"{path}: no samples after the header row (only {rows.rows} empty row{plural})")
        raise InputError(f"{path}: no samples after the header row")
    return recording


_CHUNK_CHARS = 1 << 20  # rows are parsed a chunk of about this many characters at a time


def _whole_lines(handle: io.TextIOBase) -> str:
    """The next chunk of about _CHUNK_CHARS characters, to the end of its last line ('' at the end of the file).
    One read and a split at the line ends costs half of reading the lines one by one."""
    chunk = handle.read(_CHUNK_CHARS)
    # The rest of the last line: after a '\r' that is '\n' (one '\r\n' end) or the next line, whole either way.
    return chunk + handle.readline() if chunk else chunk


def _lines(chunk: str) -> list[str]:
    """``chunk``'s lines, ends kept, split where the file's reader splits them: at '\n', '\r' and '\r\n' only."""
    return io.StringIO(chunk, newline="").readlines()


def _numeric_columns(
    text: str, delimiter: str, width: int, columns: list[int], missing: list[bool]
) -> list[FloatArray] | None:
    """``columns`` of the rows in ``text`` (lines ended by '\n', the last by none) as float arrays, read at once (a
    10 min recording at 1000 Hz is 600,000 rows; a split per line took most of a replay's time); None when a row has too
    many or too few separators, is longer than the row-by-row reader takes (``csv.field_size_limit``), or a wanted
    cell is not a number (``missing``, per wanted column: or a missing sample, as ``_floats``). With the value
    column's ``missing`` (the first of ``columns``), an empty line is a row of empty cells, as the row-by-row rules
    read it."""
    if len(delimiter) != 1 or not delimiter.isascii():
        return None
    # Separators per line, found in the UTF-8 bytes at once (a count per line took as long as the split).
    raw, ends = _line_ends(text)
    line_bytes = np.diff(ends, prepend=-1)  # each line's length and its end
    if missing[0] and bool((line_bytes == 1).any()):  # blank rows: missing samples ('\n\n' in text took 4x longer)
        text = _EMPTY_LINE.sub(delimiter * (width - 1), text)
        raw, ends = _line_ends(text)
        line_bytes = np.diff(ends, prepend=-1)
    if int(line_bytes.max()) - 1 > csv.field_size_limit():  # bytes: at least as many as characters
        return None
    separators = np.flatnonzero(raw == ord(delimiter))
    per_line = width - 1
    if not _every_line_has(separators, ends, per_line):
        # Every row one separator longer, at its end (OpenSignals ends its rows so): an empty last cell, which the
        # row-by-row rules read past.
        per_line = width
        ended = text.endswith(delimiter) and text.count(delimiter + "\n") == len(ends) - 1
        if not (ended and _every_line_has(separators, ends, per_line)):
            return None
    decimals = _decimal_columns(raw, separators.reshape(len(ends), per_line), ends, columns)
    if decimals is not None:
        return decimals
    if per_line == width:
        text = text.replace(delimiter + "\n", "\n")[:-1]
    try:  # numpy's C reader takes only the wanted cells (~2.5x faster), and nothing float() would refuse
        table = np.loadtxt(
            io.StringIO(text), delimiter=delimiter, usecols=columns, comments=None, quotechar=None, ndmin=2
        )
        if any(missing):  # one NaN, as _floats
            np.copyto(table, np.nan, where=np.isnan(table))
        return [table[:, k].copy() for k in range(len(columns))]
    except ValueError:  # a missing cell, or a number only float() reads ('1_0'): the cells one by one
        pass
    # Every line has width - 1 separators and one line end (the last has none), so the k-th cell of one split of the
    # whole text belongs to row k // width: the rows' own cells, empty ones included, as a split per line gives them.
    cells = text.replace(delimiter, "\n").split("\n")
    wanted = [cells[c::width] for c in columns]
    if any("_" in "".join(column) for column in wanted):  # numpy reads '1_0' as float() does: the rows refuse it
        return None
    try:
        return [_floats(column, m) for column, m in zip(wanted, missing, strict=True)]
    except ValueError:  # not a number (a date, a unit): the rows are split one by one
        return None


def _line_ends(text: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.intp]]:
    """``text`` as UTF-8 bytes, and where each of its lines ends (at its '\n', the last at the end)."""
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    return raw, np.append(np.flatnonzero(raw == ord("\n")), raw.size)


def _decimal_columns(
    raw: npt.NDArray[np.uint8], separators: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], columns: list[int]
) -> list[FloatArray] | None:
    """``columns`` of the lines of ``raw`` (UTF-8; ``separators``: each line's separators, one row per line; ``ends``:
    each line's end) when every wanted cell is a plain decimal, else None (numpy's reader decides)."""
    starts = np.concatenate((_NO_SEPARATOR, ends[:-1] + 1))  # each line's first cell
    bounds = [
        (starts if c == 0 else separators[:, c - 1] + 1, ends if c == separators.shape[1] else separators[:, c])
        for c in columns
    ]
    # A file that writes its numbers otherwise ('1.5e-01') does so from its first row: no pass over the chunk then.
    if not all(_PLAIN_DECIMAL.fullmatch(raw[int(a[0]) : int(b[0])].tobytes()) for a, b in bounds):
        return None
    parsed = []
    for cell_starts, cell_ends in bounds:
        values = _decimal_cells(raw, cell_starts, cell_ends)
        if values is None:
            return None
        parsed.append(values)
    return parsed


_NO_SEPARATOR = np.zeros(1, dtype=np.intp)
_PLAIN_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_MOST_DIGITS = 15  # a 15-digit integer is below 2**53: an exact double, as every power of ten up to 10**22 is
_MOST_EXPONENT_CHARS = 5  # 'e-308'
_EXACT_POWERS = 22  # 10**22 is the largest power of ten a double holds exactly
_POWERS_OF_TEN = 10.0 ** np.arange(_EXACT_POWERS + 1)


def _decimal_cells(
    raw: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], exponent: bool = False
) -> FloatArray | None:
    """The cells ``raw[starts[i]:ends[i]]`` as numbers when every one is a plain decimal (an optional sign, digits
    with at most one decimal point, at most _MOST_DIGITS digits, then optionally an exponent such as 'e-05'; nothing
    else, not even a space), else None. ``exponent``: the cells are exponents (a sign and digits only).

    The value is float()'s to the bit: the digits are read as an integer, exact below 2**53, and multiplied or
    divided once by an exact power of ten (up to 10**22; a cell further from it gives None), and that one operation
    rounds correctly as float() does. A character position at a time over all cells: about twice as fast as numpy's
    own reader on the same cells (a 10 min recording at 1000 Hz is 600,000 of them; this was a third of a replay).
    Exponents are read so that a file written with them ('%g' writes 1.5e-05 near zero) is not read by numpy's
    reader, which took a sixth of a 1000 Hz replay."""
    n = len(starts)
    if n == 0:
        return np.zeros(0)
    if int((ends - starts).min()) < 1:  # an empty cell
        return None
    first = raw[starts]
    negative = first == ord("-")
    starts = starts + (negative | (first == ord("+")))
    lengths = ends - starts
    width = int(lengths.max())
    if width > _MOST_DIGITS + 1 + (not exponent) * _MOST_EXPONENT_CHARS or int(lengths.min()) < 1:
        return None
    at = np.arange(width, dtype=np.intp)[:, None] + starts  # row k: each cell's k-th character (past its end: ignored)
    np.minimum(at, len(raw) - 1, out=at)
    chars = raw[at]
    powers = None
    if not exponent and width > 1:
        marks = ((chars | np.uint8(0x20)) == ord("e")) & (np.arange(width)[:, None] < lengths)
        if marks.any():  # the digits end at the first 'e'; the cells after it are read as integers
            with_exponent = marks.any(axis=0)
            mark_at = marks.argmax(axis=0)[with_exponent]
            exponents = _decimal_cells(raw, starts[with_exponent] + mark_at + 1, ends[with_exponent], exponent=True)
            if exponents is None:
                return None
            lengths = lengths.copy()
            lengths[with_exponent] = mark_at
            if int(lengths.min()) < 1:
                return None
            powers = np.zeros(n, dtype=np.intp)
            powers[with_exponent] = exponents
    mantissa = np.zeros(n, dtype=np.int64)
    digits, dots, after_dot = (np.zeros(n, dtype=np.intp) for _ in range(3))
    seen_dot = np.zeros(n, dtype=bool)
    for k in range(int(lengths.max())):
        inside = lengths > k
        digit = chars[k] - np.uint8(ord("0"))  # wraps around below '0': a digit is < 10
        is_digit = (digit < 10) & inside
        np.multiply(mantissa, 10, out=mantissa, where=is_digit)
        np.add(mantissa, digit, out=mantissa, where=is_digit)
        digits += is_digit
        after_dot += is_digit & seen_dot
        is_dot = (chars[k] == ord(".")) & inside
        seen_dot |= is_dot
        dots += is_dot
    if (
        (digits + dots != lengths).any()
        or int(dots.max()) > (not exponent)
        or not 1 <= int(digits.min()) <= int(digits.max()) <= _MOST_DIGITS
    ):
        return None
    if powers is None:
        values: FloatArray = mantissa / _POWERS_OF_TEN[after_dot]
    else:
        powers -= after_dot  # the value is mantissa * 10**powers
        if int(np.abs(powers).max()) > _EXACT_POWERS:
            return None
        values = np.where(
            powers >= 0, mantissa * _POWERS_OF_TEN[np.abs(powers)], mantissa / _POWERS_OF_TEN[np.abs(powers)]
        )
    np.negative(values, out=values, where=negative)
    return values


def _every_line_has(separators: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], count: int) -> bool:
    """Whether each line holds ``count`` of the (sorted) ``separators``, the lines ending at ``ends``: with as many
    in all, it is enough that each line's first lies after the last line's end, and its last before its own."""
    if len(separators) != count * len(ends):
        return False
    if count == 0:
        return True
    per_line = separators.reshape(len(ends), count)
    return bool((per_line[:, -1] < ends).all() and (per_line[1:, 0] > ends[:-1]).all())


_EMPTY_LINE = re.compile(r"^$", re.MULTILINE)


def _blank_rows_at_end(text: str, delimiter: str) -> int:
    """How many of ``text``'s last lines are blank (only whitespace and separators)."""
    if text[text.rfind("\n") + 1 :].replace(delimiter, "").strip():
        return 0  # the usual case: the last line is a row
    content = _last_content(delimiter).search(text)  # in C: a loop over the lines took seconds for a long gap
    return text.count("\n") + 1 if content is None else text.count("\n", content.start())


@functools.lru_cache(maxsize=8)
def _last_content(delimiter: str) -> re.Pattern[str]:
    """The last character that is neither whitespace (as str.strip() sees it) nor ``delimiter``."""
    blank = rf"\s{re.escape(delimiter)}"
    return re.compile(rf"[^{blank}][{blank}]*\Z")


def _floats(cells: list[str], missing_ok: bool) -> FloatArray:
    """The cells as numbers; with ``missing_ok`` a missing sample (``MISSING_CELLS``, any NaN) is NaN, one NaN (as
    the row-by-row rules give it: '-nan' has its sign bit set). ValueError for any other cell that is not a number."""
    try:
        numbers = np.array(cells, dtype=np.float64)
    except ValueError:
        if not missing_ok:
            raise
        numbers = np.array([("nan" if c.strip().lower() in MISSING_CELLS else c) for c in cells], dtype=np.float64)
    if missing_ok:
        np.copyto(numbers, np.nan, where=np.isnan(numbers))
    return numbers


class _Rows:
    """The rows read so far. Chunks of plain rows (every wanted cell a number, or with ``missing_ok`` a missing
    sample) are parsed by numpy in one go (~10x faster: a replay spent half its time here); any other chunk goes row
    by row, which is where every rule of ``read_recording`` and its one-line errors live. Both give the same values,
    whatever the chunks' size."""

    def __init__(
        self,
        path: Path,
        column: str,
        names: list[str],
        col: int,
        tcol: int | None,
        missing_ok: bool,
        delimiter: str = ",",
    ) -> None:
        self.path, self.column, self.names, self.col, self.tcol = path, column, names, col, tcol
        self.delimiter = delimiter  # a decimal comma splits a value in two cells only where ',' separates them
        self.missing_ok = missing_ok
        self.values: list[FloatArray] = []
        self.times: list[FloatArray] | None = [] if tcol is not None else None
        self.rows = 0  # rows read (1-based numbers after the header), blank ones included
        self.blank_row = 0  # an empty line inside the data is a missing sample: skipping it would shift time

    def add_plain(self, chunk: str, delimiter: str) -> bool:
        """Parse a chunk of plain rows at once (whole lines); False (nothing taken) when it needs the row-by-row
        rules. Missing samples (``missing_ok``) and missing times are NaN, as row by row; blank rows at the chunk's
        end wait for the next row (at the end of the file they are no samples)."""
        if self.blank_row and not self.missing_ok:  # an error if a row follows: the row-by-row rules say which
            return False
        width = len(self.names)
        tcol = self.tcol if self.times is not None else None
        text = (chunk.replace("\r\n", "\n").replace("\r", "\n") if "\r" in chunk else chunk).removesuffix("\n")
        blank_at_end = _blank_rows_at_end(text, delimiter) if self.missing_ok else 0
        if blank_at_end and blank_at_end == text.count("\n") + 1:  # nothing but blank rows
            return False
        if width == 1:  # one column: each line is a value (a separator in it fails to parse: row by row)
            lines = text.split("\n")
            if len(text) > csv.field_size_limit() and max(map(len, lines)) > csv.field_size_limit():
                return False  # a cell longer than the row-by-row reader takes
            if "_" in text:  # numpy reads '1_0' as float() does: the row-by-row rules refuse it
                return False
            try:
                parsed: list[FloatArray] | None = [_floats(lines, self.missing_ok)]
            except ValueError:
                return False
        else:  # a time cell may always be missing (``_append_time``)
            wanted, missing = [self.col], [self.missing_ok]
            if tcol is not None:
                wanted, missing = [self.col, tcol], [self.missing_ok, True]
            parsed = _numeric_columns(text, delimiter, width, wanted, missing)
        if parsed is None:
            return False
        values, *times = parsed
        n_lines = len(values)  # one value per line, blank ones included
        taken = n_lines - blank_at_end
        if np.isinf(values).any() or not (self.missing_ok or np.isfinite(values).all()):
            return False
        if times and np.isinf(times[0]).any():  # the row-by-row rules decide: an error, or no time column
            return False
        if self.blank_row:  # the blank rows at the previous chunk's end: missing samples, now that a row follows
            waiting = np.full(self.rows + 1 - self.blank_row, np.nan)
            self.values.append(waiting)
            if self.times is not None:
                self.times.append(waiting)
            self.blank_row = 0
        self.values.append(values[:taken])
        if self.times is not None:  # a time column: times[0]
            self.times.append(times[0][:taken])
        self.rows += n_lines
        if taken < n_lines:
            self.blank_row = self.rows - (n_lines - taken) + 1
        return True

    def _had_times(self, times: list[float]) -> bool:
        """Whether the time column has held a number so far (this chunk's ``times`` or an earlier chunk's)."""
        earlier = self.times or []
        return any(not math.isnan(t) for t in times) or any(bool(np.isfinite(chunk).any()) for chunk in earlier)

    def add_checked(self, reader: Iterable[list[str]]) -> None:
        """Row by row, with every check and its one-line error."""
        path, column, names, col, tcol, missing_ok = (
            self.path,
            self.column,
            self.names,
            self.col,
            self.tcol,
            self.missing_ok,
        )
        values: list[float] = []
        times: list[float] | None = [] if self.times is not None else None
        for row_number, row in enumerate(reader, start=self.rows + 1):
            self.rows = row_number
            if not row or not any(cell.strip() for cell in row):
                self.blank_row = self.blank_row or row_number
                continue
            if self.blank_row and missing_ok:
                values.extend([math.nan] * (row_number - self.blank_row))
                if times is not None:
                    times.extend([math.nan] * (row_number - self.blank_row))
                self.blank_row = 0
            if self.blank_row:
                raise InputError(
                    f"{path}: row {self.blank_row}: empty row (a missing sample would shift all later times)"
                )
            if len(row) > len(names) and any(cell.strip() for cell in row[len(names) :]):  # "1.0,2.0," is fine
                hint = " (a decimal comma? values need a decimal point)" if self.delimiter == "," else ""
                raise InputError(f"{path}: row {row_number}: {len(row)} cells for {len(names)} columns{hint}")
            if col >= len(row):  # not an empty cell: the cell is not there (another separator?)
                raise InputError(f"{path}: row {row_number}: {len(row)} cell(s) for {len(names)} columns")
            if times is not None and tcol is not None:
                time_cell = row[tcol] if tcol < len(row) else ""
                read = _append_time(times, time_cell)
                if read is None and self._had_times(times):  # numbers so far: a bad cell, not a clock-time column
                    raise InputError(
                        f"{path}: row {row_number}: {names[tcol]!r} is not a time: {clipped(time_cell.strip(), 27)!r}"
                        " (a time column needs a number, or nothing, in each row)"
                    )
                times = read
            cell = row[col].strip()
            if missing_ok and cell.lower() in MISSING_CELLS:
                values.append(math.nan)
                continue
            try:
                value = _number(cell)
            except ValueError:
                hint = " (a decimal comma? values need a decimal point)" if "," in cell else ""
                raise InputError(
                    f"{path}: row {row_number}: {column!r} is not a number: {clipped(cell, 27)!r}{hint}"
                ) from None
            if missing_ok and math.isnan(value):  # -nan, +nan
                values.append(math.nan)
                continue
            if not np.isfinite(value):
                raise InputError(f"{path}: row {row_number}: {column!r} is not finite ({clipped(cell, 27)})")
            values.append(value)
        self.values.append(np.asarray(values, dtype=np.float64))
        if times is None:
            self.times = None  # a cell that is not a plain number (a date, a clock time): no time column
        elif self.times is not None:
            self.times.append(np.asarray(times, dtype=np.float64))

    def recording(self) -> Recording:
        values = np.concatenate(self.values) if self.values else np.zeros(0)
        if self.times is None or self.tcol is None:
            return Recording(values, None, None)
        times = np.concatenate(self.times) if self.times else np.zeros(0)
        return Recording(values, times, self.names[self.tcol])


JUMP_STEPS = 2.5  # a time step this many sample periods long (or more) means rows were left out
STEP_ROWS = 1000  # a time column's step is read from this many rows: its first ones, and those before each jump
MIN_LOCAL_STEPS = 100  # fewer steps before a jump than this: the first rows' step (one odd stamp is no clock)
# Names of a time column (compared in lower case). Only used to check the rows against --rate.
TIME_COLUMNS = frozenset({"time", "time_s", "time [s]", "time (s)", "time_sec", "t", "t_s", "timestamp", "seconds"})


def _append_time(times: list[float], cell: str) -> list[float] | None:
    """Add one time cell; None (stop reading times) once one is not a plain number (a date, a clock time)."""
    text = cell.strip()
    if not text or text.lower() in MISSING_CELLS:
        times.append(math.nan)
        return times
    try:
        value = _number(text)
    except ValueError:
        return None
    if math.isnan(value):  # -nan, as C's printf writes it: missing, as in the value column
        times.append(math.nan)
        return times
    if not math.isfinite(value):
        return None
    times.append(value)
    return times


@dataclass(frozen=True)
class TimeGrid:
    """What a time column says about the rows: its unit, and rows left out (inserted as missing samples)."""

    values: FloatArray
    unit: str | None  # "s" or "ms"; None: the column does not step by one sample period
    rows_added: int
    jumps: int
    step: float = math.nan  # the time column's typical step (its first rows'), in its own unit


def rows_on_the_time_grid(recording: Recording, sampling_rate: float, path: str | Path) -> TimeGrid | None:
    """Put rows left out of a recording back, as missing samples, where its time column says they were.

    None when there is no usable time column; ``unit`` None when its step matches neither seconds nor
    milliseconds at ``sampling_rate`` (then rows are taken as consecutive samples, as without a time
    column). InputError when time runs backwards.
    """
    time = recording.time
    if time is None or len(time) < 3:
        return None
    missing = np.isnan(time)
    gapped = bool(missing.any())
    known = np.flatnonzero(~missing) if gapped else np.arange(len(time))
    if len(known) < 3:
        return None
    dt, rows = np.diff(time[known] if gapped else time), np.diff(known)
    steps = dt / rows
    # The unit, and whether the column steps by one sample period at all, from the first rows only: nothing read later
    # in the file may change how its start is read (a replay of it cut short gives the same outputs up to the cut).
    step = small_median(steps[:STEP_ROWS])
    unit = next((u for u, scale in (("s", 1.0), ("ms", 1000.0)) if abs(step * sampling_rate / scale - 1) < 0.02), None)
    if unit is None:
        return TimeGrid(recording.values, None, 0, 0, step)
    back = np.flatnonzero(dt <= 0)
    if len(back):
        row = int(known[back[0] + 1]) + 1
        raise InputError(f"{path}: row {row}: {recording.time_column!r} goes backwards or repeats")
    # A jump is a step of at least JUMP_STEPS rows' worth: timestamp jitter and a clock a few percent off are
    # not rows left out (rounding each step would add rows for every late stamp and never take them back).
    # The local step is a mean of ordinary steps (or the first rows' step), so no shorter than the shortest of them: no
    # step JUMP_STEPS times that long, no jump (the usual file, whose per-row measure took a tenth of a 1000 Hz replay).
    ordinary = steps[steps <= (JUMP_STEPS - 0.5) * step]
    shortest = min(step, float(ordinary.min())) if len(ordinary) else step
    if not np.any(steps > JUMP_STEPS * shortest * (1 - 1e-9)):
        return TimeGrid(recording.values, unit, 0, 0)
    local = _step_before(steps, step)
    jump = dt > JUMP_STEPS * rows * local
    gaps = np.where(jump, np.round(dt / local).astype(np.int64) - rows, 0)
    if not np.any(gaps > 0):
        return TimeGrid(recording.values, unit, 0, 0)
    added = int(gaps.sum())
    if (len(time) + added) / sampling_rate > MAX_RECORDING_S:
        k = int(known[1:][np.argmax(gaps)])
        raise InputError(
            f"{path}: row {k + 1}: {recording.time_column!r} jumps by {dt[np.argmax(gaps)]:g} {unit}: the recording "
            f"would last more than {MAX_RECORDING_S / 3600:.0f} h"
        )
    position = np.arange(len(time), dtype=np.int64)
    shift = np.zeros(len(time), dtype=np.int64)
    for k, extra in zip(known[1:][gaps > 0], gaps[gaps > 0], strict=True):
        shift[k:] += extra
    out = np.full(len(time) + added, np.nan)
    out[position + shift] = recording.values
    return TimeGrid(out, unit, added, int(np.count_nonzero(gaps > 0)))


def _step_before(steps: FloatArray, first_step: float) -> FloatArray:
    """For each step of a time column, the column's step per row as the STEP_ROWS steps before it show it (their
    mean, long steps left out; ``first_step``, read from the first rows, before any): a logger clock a little off, by
    a changing amount, measures a jump in its own units of the moment."""
    ordinary = steps <= (JUMP_STEPS - 0.5) * first_step  # a longer step may be a jump: it does not set the unit
    total = np.concatenate(([0.0], np.cumsum(np.where(ordinary, steps, 0.0))))
    count = np.concatenate(([0], np.cumsum(ordinary)))
    k = np.arange(len(steps))
    start = np.maximum(0, k - STEP_ROWS)
    n = count[k] - count[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        local = (total[k] - total[start]) / n
    return np.where(n >= MIN_LOCAL_STEPS, local, first_step)
