"""Numbers read from files (JSON, TOML, a session's records), checked once the same way."""

from __future__ import annotations

import math

from .errors import clipped


def finite_float(value: object) -> float | None:
    """``value`` as a float when it is a finite number (not a bool); None otherwise, a huge integer included
    (``float(10**400)`` raises OverflowError rather than giving inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error line: at most ``limit`` characters (a 400-digit number is not repeated in full,
    and one of over 4300 digits has no repr at all)."""
    try:
        text = repr(value)
    except ValueError:  # int too long to convert to str
        text = "an integer of thousands of digits"
    return clipped(text, limit)
