"""What the store's reads hand back: frozen records, checked at the store's boundary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..detector import Kind
from ..values import finite_float


@dataclass(frozen=True)
class StrapInfo:
    role: str
    address: str
    name: str
    firmware: str
    protocol_version: int
    rate_hz: int


@dataclass(frozen=True)
class SampleSeries:
    """One strap's stored samples, sorted by counter."""

    counters: npt.NDArray[np.int64]
    host_t_s: npt.NDArray[np.float64]
    values: npt.NDArray[np.int64]


class BreathEventRecord(Protocol):
    """A strap breath event as the store keeps it: a ``StoredEvent`` read back, or the link's ``StrapEvent``
    written as it comes (no copy between the two)."""

    @property
    def role(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def counter(self) -> int: ...
    @property
    def confirmed_counter(self) -> int: ...
    @property
    def depth_counts(self) -> int: ...
    @property
    def interval_samples(self) -> int: ...
    @property
    def host_t_s(self) -> float: ...


@dataclass(frozen=True)
class LateData:
    """What of one strap reached the host only after a drop-out (backfill): stored, never seen by the live engine.
    A session from before this was kept has none recorded."""

    sample_ranges: tuple[tuple[int, int], ...] = ()  # (first, last) counters, inclusive
    events: frozenset[tuple[str, int]] = frozenset()  # (kind, counter)

    def sample_mask(self, counters: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """True for each of ``counters`` that came late."""
        if not self.sample_ranges:
            return np.zeros(len(counters), dtype=bool)
        # The ranges never overlap: the one that may hold a counter is the last one starting at or before it.
        firsts, lasts = (np.array(column, dtype=np.int64) for column in zip(*sorted(self.sample_ranges), strict=True))
        i = np.searchsorted(firsts, counters, side="right") - 1
        return (i >= 0) & (counters <= lasts[np.maximum(i, 0)])


@dataclass(frozen=True)
class ArrivalData:
    """When each of one strap's live notifications reached the engine (host Unix s), and in which order (a sequence
    number across both straps). A session from before this was kept has none recorded."""

    blocks: tuple[tuple[int, int, float, int], ...] = ()  # (first, last) counters, inclusive, arrival, sequence
    events: Mapping[tuple[str, int], tuple[float, int]] = field(default_factory=dict)  # (kind, counter) -> same


@dataclass(frozen=True)
class StoredEvent:
    role: str
    kind: Kind
    counter: int
    confirmed_counter: int
    depth_counts: int
    interval_samples: int
    host_t_s: float


def _number(value: object) -> float:
    """A stored JSON number as a float; NaN for anything else (absent, null, text, a boolean, inf, an integer too
    large for a float)."""
    number = finite_float(value)
    return math.nan if number is None else number


@dataclass(frozen=True)
class StoredState:
    """One engine state as stored: its host time and every field the engine wrote.

    The fields stay a mapping because a session outlives the engine that wrote it (an older file
    lacks newer fields, a newer one has fields this version does not know, and exports keep them
    all); what readers need is typed here, at the store's boundary.
    """

    t_s: float
    fields: Mapping[str, Any] = field(hash=False)  # a dict: hashed by time alone, compared in full

    @property
    def decision(self) -> str | None:
        decision = self.fields.get("decision")
        return decision if isinstance(decision, str) else None

    def number(self, name: str) -> float:
        """A numeric field (``plv``, ``therapist_rate_bpm``, ...); NaN where absent or not a number."""
        return _number(self.fields.get(name))


@dataclass(frozen=True)
class StoredNudge:
    """A nudge as stored: the engine's nudge record (``detail``) and, once measured, its efficacy."""

    id: int
    t_s: float
    detail: Mapping[str, Any]
    efficacy: Mapping[str, Any] | None  # None until the efficacy window has passed

    @property
    def decoupled(self) -> bool | None:
        """Whether the therapist decoupled within the efficacy window; None while pending."""
        decoupled = None if self.efficacy is None else self.efficacy.get("decoupled")
        return decoupled if isinstance(decoupled, bool) else None

    @property
    def decoupled_after_s(self) -> float | None:
        """Seconds from the nudge to decoupling, if it did and the time was stored."""
        after = math.nan if self.efficacy is None else _number(self.efficacy.get("after_s"))
        return None if math.isnan(after) else after

    @property
    def unseen_s(self) -> float:
        """Of the efficacy window, the seconds without a strap's data (0 where not stored: older sessions)."""
        unseen = math.nan if self.efficacy is None else _number(self.efficacy.get("paused_s"))
        return 0.0 if math.isnan(unseen) else max(0.0, unseen)

    @property
    def delivered(self) -> bool | None:
        """Whether the strap confirmed the haptic pattern; None for sessions from before delivery was recorded."""
        delivered = self.detail.get("delivered")
        return delivered if isinstance(delivered, bool) else None

    @property
    def pattern_duration_s(self) -> float | None:
        """How long the haptic pattern lasts, from the stored pattern (None if not stored)."""
        pattern = self.detail.get("pattern")
        if not isinstance(pattern, Mapping):
            return None
        duration_ms = _number(pattern.get("pulse_count")) * (
            _number(pattern.get("on_ms")) + _number(pattern.get("off_ms"))
        )
        return None if math.isnan(duration_ms) else duration_ms / 1000.0

    def number(self, name: str) -> float:
        """A numeric field of the nudge record (``plv``, ``direction``, ...); NaN where absent or not a number."""
        return _number(self.detail.get(name))


def mute_duration_s(detail: str | None) -> float | None:
    """A 'muted' link event's length ("10.0 min"; "0 min" ends a mute); None (the policy's mute_s) if it does not
    say. The daemon writes these when the therapist presses m; a resumed run and `replay SESSION` read them back."""
    words = (detail or "").split()
    try:
        minutes = float(words[0]) if len(words) == 2 and words[1] == "min" else math.nan
    except ValueError:
        return None
    return minutes * 60.0 if math.isfinite(minutes) and minutes >= 0 else None


def battery_level_pct(detail: str | None) -> int | None:
    """A 'battery' link event's level ("62%"), 0..100; None if it does not say. The daemon writes one each time a
    strap's reported level changes."""
    text = (detail or "").strip()
    if not text.endswith("%") or not text[:-1].isdigit():
        return None
    level = int(text[:-1])
    return level if level <= 100 else None
