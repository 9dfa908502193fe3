"""Virtual straps: the real firmware in the MicroPython unix port, on a real BLE stack (Bumble)."""

from .bench import BenchThread, VirtualBench
from .feeds import recording_counts, signal_counts, synthetic_breathing, synthetic_counts
from .strap import (
    PwmChange,
    RadioStats,
    SimError,
    SimUnavailable,
    StrapConfig,
    StrapFaults,
    VirtualStrap,
    micropython_unavailable_reason,
)

__all__ = [
    "BenchThread",
    "PwmChange",
    "RadioStats",
    "SimError",
    "SimUnavailable",
    "StrapConfig",
    "StrapFaults",
    "VirtualBench",
    "VirtualStrap",
    "micropython_unavailable_reason",
    "recording_counts",
    "signal_counts",
    "synthetic_breathing",
    "synthetic_counts",
]
