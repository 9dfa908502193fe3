"""The engine's input records: what a strap delivers to the host, on host time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..detector import TimedBreath
from ..roles import Role


@dataclass(frozen=True)
class StrapBlock:
    """A block of strap samples (one BLE notification's worth) that reached the host.

    Sample i sits at ``first_t_s + i * period_s``; ``counts`` are the strap's raw ADC counts.
    """

    role: Role
    first_t_s: float
    period_s: float
    counts: npt.NDArray[np.int64]

    @property
    def last_t_s(self) -> float:
        return self.first_t_s + (len(self.counts) - 1) * self.period_s

    @property
    def arrival_t_s(self) -> float:
        """The host has the block once its last sample's averaging window has closed."""
        return self.last_t_s + 0.5 * self.period_s


@dataclass(frozen=True)
class StrapBreath:
    """A breath event as reported by ``role``'s strap; usable from ``breath.reported_t_s`` on."""

    role: Role
    breath: TimedBreath


@dataclass(frozen=True)
class Mute:
    """The therapist muted nudges ('mirroring on purpose') at ``t_s`` for ``duration_s`` (None: the policy's
    ``mute_s``). Live, the daemon calls ``engine.mute``; a stored session replays it as this record, so a resumed
    run and ``replay SESSION`` hold the same nudges back."""

    t_s: float
    duration_s: float | None = None


@dataclass(frozen=True)
class NudgeUndelivered:
    """The nudge given at ``nudge_t_s`` never reached the therapist's strap; the host knew at ``t_s``. Live, the
    daemon calls ``engine.nudge_undelivered``; a stored session replays it as this record, at the nudge's own time,
    so a resumed run and ``replay SESSION`` hold back what the live run held back (applied after the whole replay,
    a failed nudge kept the replay from re-making the delivered one after it)."""

    t_s: float
    nudge_t_s: float


StreamItem = StrapBlock | StrapBreath | Mute | NudgeUndelivered
