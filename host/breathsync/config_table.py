"""TOML configuration tables into frozen dataclasses: one reader, one set of one-line errors.

Used by the engine's ``[engine]``/``[policy]`` tables and the daemon's ``[session]``/``[straps]``/
``[outputs]``. A field's type is its default's type; ranges are optional per field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .small_files import read_small_file
from .values import finite_float, shown

MAX_CONFIG_FILE_BYTES = 1 << 20  # a configuration is a few KB


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed document at ``path``; ``InputError`` (one line) when it is missing or not TOML."""
    import tomllib  # here: a replay without --config never parses TOML (~2 ms of its start-up)

    path = Path(path)
    raw = read_small_file(path, MAX_CONFIG_FILE_BYTES, "configuration file")
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark (some Windows editors) is not content
    except UnicodeDecodeError:
        raise InputError(f"{path}: invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: invalid TOML: nested too deeply") from None
    except ValueError:  # Python's limit on the digits of an integer (4300)
        raise InputError(f"{path}: invalid TOML: a number with too many digits") from None


def table_to_dataclass(
    name: str,
    cls: type[Any],
    table: object,
    where: str,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> Any:
    """``cls`` built from the TOML table ``[name]``: unknown keys, wrong types, non-finite numbers and
    values outside ``ranges`` are rejected with an ``InputError`` naming ``where`` and the key."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: [{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = {}
    for key, value in table.items():
        spec = known.get(key)
        if spec is None:
            raise InputError(f"{where}: unknown key {name}.{key} (known: {', '.join(sorted(known))})")
        default = spec.default
        label = f"{where}: {name}.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise InputError(f"{label} must be a bool (got {shown(value)})")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise InputError(f"{label} must be a string (got {shown(value)})")
        elif isinstance(value, bool):  # TOML true/false where a number belongs (bool is an int in Python)
            raise InputError(f"{label} must be a number (got {shown(value)})")
        elif isinstance(default, int):
            if not isinstance(value, int):
                raise InputError(f"{label} must be an integer (got {shown(value)})")
        elif isinstance(default, float):
            number = finite_float(value)
            if number is None:
                raise InputError(f"{label} must be a finite number (got {shown(value)})")
            value = number
        if ranges is not None and key in ranges and isinstance(value, int | float) and not isinstance(value, bool):
            lo, hi = ranges[key]
            if not lo <= value <= hi:
                raise InputError(f"{label} = {value} is out of range [{lo:g}, {hi:g}]")
        values[key] = value
    return cls(**values)
