"""Lab Streaming Layer outlets: both raw respiration streams, breath events, nudge markers.

Stream metadata follows the XDF/LSL conventions (``desc/channels/channel`` with label, unit,
type; ``desc/acquisition``): a researcher's LabRecorder picks them up next to EEG or video.
Discovery is limited to this machine by default (``lsl_scope = "machine"``): LSL's multicast
would otherwise reach the lab network, which a therapist's laptop should not do unasked.
Samples carry their own time (the strap counter mapped to the host clock), converted to LSL's
clock, so backfilled samples land where they were taken.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import __version__
from ..roles import Role


def _configure(scope: str) -> None:
    """Point liblsl at a config with the chosen resolve scope (before pylsl is imported)."""
    if "LSLAPICFG" in os.environ:
        return  # the user's own LSL configuration wins
    # A private file (not a fixed name in the shared temp directory, which another user could
    # plant first), removed when the process ends. Log level -1: warnings and errors only, not
    # liblsl's INFO lines on every start.
    handle, name = tempfile.mkstemp(prefix="breathsync-lsl-", suffix=".cfg")
    with os.fdopen(handle, "w") as cfg:
        cfg.write(f"[multicast]\nResolveScope = {scope}\n[ports]\nIPv6 = disable\n[log]\nlevel = -1\n")
    atexit.register(Path(name).unlink, missing_ok=True)
    os.environ["LSLAPICFG"] = name


def load_pylsl(scope: str = "machine") -> ModuleType:
    _configure(scope)
    import pylsl

    module: ModuleType = pylsl
    return module


class LslOutlets:
    """One outlet per raw stream, one for breath events, one for nudges."""

    def __init__(
        self,
        session_id: str,
        rate_hz: float,
        strap_ids: Mapping[Role, str],
        scope: str = "machine",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pylsl = load_pylsl(scope)
        lsl = self.pylsl
        # LSL's clock (local_clock) and the host clock the link maps counters to (the daemon's): their offset is
        # taken at each push, as local_clock stops while the machine sleeps and the daemon's clock does not.
        self._clock = clock
        self.resp: dict[str, Any] = {}
        for role, strap_id in strap_ids.items():
            info = lsl.StreamInfo(
                f"breathsync-{role}-resp", "RESP", 1, rate_hz, lsl.cf_int32, f"{session_id}-{role}-{strap_id}"
            )
            self._describe(info, [(f"resp_{role}", "counts", "RESP")], role, strap_id)
            self.resp[role] = lsl.StreamOutlet(info, chunk_size=7)
        events = lsl.StreamInfo(
            "breathsync-breaths", "Markers", 1, lsl.IRREGULAR_RATE, lsl.cf_string, f"{session_id}-breaths"
        )
        self._describe(events, [("breath_event", "", "Marker")], "both", "")
        self.events = lsl.StreamOutlet(events)
        nudges = lsl.StreamInfo(
            "breathsync-nudges", "Markers", 1, lsl.IRREGULAR_RATE, lsl.cf_string, f"{session_id}-nudges"
        )
        self._describe(nudges, [("nudge", "", "Marker")], "therapist", "")
        self.nudges = lsl.StreamOutlet(nudges)

    def _describe(self, info: Any, channels: list[tuple[str, str, str]], role: str, strap_id: str) -> None:
        desc = info.desc()
        desc.append_child_value("manufacturer", "breathsync")
        desc.append_child_value("role", role)
        chans = desc.append_child("channels")
        for label, unit, kind in channels:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", kind)
        acq = desc.append_child("acquisition")
        acq.append_child_value("software", f"breathsync {__version__}")
        if strap_id:
            acq.append_child_value("strap", strap_id)

    def lsl_time(self, host_t_s: float) -> float:
        return float(host_t_s) + self._offset_s()

    def _offset_s(self) -> float:
        return float(self.pylsl.local_clock()) - self._clock()

    def push_samples(self, role: str, values: list[int], host_t_s: list[float]) -> None:
        outlet = self.resp.get(role)
        if outlet is None:
            return
        offset_s = self._offset_s()
        for value, t in zip(values, host_t_s, strict=True):
            outlet.push_sample([int(value)], float(t) + offset_s)

    def push_event(self, role: str, kind: str, host_t_s: float, depth_counts: int) -> None:
        self.events.push_sample([f"{role}:{kind}:{depth_counts}"], self.lsl_time(host_t_s))

    def push_nudge(self, host_t_s: float, text: str) -> None:
        self.nudges.push_sample([text], self.lsl_time(host_t_s))

    def close(self) -> None:
        # Outlets close when garbage collected; drop references explicitly for a prompt close.
        self.resp.clear()
        del self.events
        del self.nudges
