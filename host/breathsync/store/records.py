"""What the store's reads hand back: frozen records, checked at the store's boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..detector import Kind


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
class StoredEvent:
    role: str
    kind: Kind
    counter: int
    confirmed_counter: int
    depth_counts: int
    interval_samples: int
    host_t_s: float


@dataclass(frozen=True)
class StoredNudge:
    id: int
    t_s: float
    detail: dict[str, Any]
    efficacy: dict[str, Any] | None
