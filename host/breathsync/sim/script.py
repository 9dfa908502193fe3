"""Scripted happenings for virtual straps: what a live session meets, at set times (``breathsync sim --at``).

A step is ``SECONDS:ROLE:ACTION[:VALUE]``, SECONDS after the straps are served::

    drop          the radio link is lost once (the host reconnects and backfills)
    off[:S]       the strap's radio is gone (out of range, switched off) for S seconds; without S for good
    stall:S       connected, but nothing gets through for S seconds (a congested radio)
    reboot[:S]    the strap power-cycles, off for S seconds (default 0): its counter starts over; the battery,
                  a radio switched off and (``StrapConfig.feed_continues``, as ``breathsync sim`` sets it) the
                  wearer's breathing go on
    battery:MV    the battery's voltage from now on (the strap reads its gauge every 10 s)

Every step is one line of text, so a session's troubles can be written down and replayed as they were:
``breathsync sim --scenario therapist-follows --at 200:client:off:30 --at 60:therapist:battery:3550``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import InputError
from .strap import BATTERY_MV_RANGE, SimError, VirtualStrap, check_battery_mv

# action -> (value required, value optional); a value is seconds, or mV for battery
_ACTIONS: dict[str, tuple[bool, bool]] = {
    "drop": (False, False),
    "off": (False, True),
    "stall": (True, True),
    "reboot": (False, True),
    "battery": (True, True),
}
MAX_STEP_S = 86_400.0  # a day: anything later is a typo


@dataclass(frozen=True)
class ScriptStep:
    """One scripted happening: ``action`` on ``role``'s strap ``at_s`` seconds after serving."""

    at_s: float
    role: str
    action: str
    value: float | None = None

    def describe(self) -> str:
        v = self.value
        if self.action == "drop":
            what = "radio link lost"
        elif self.action == "off":
            what = "radio gone " + (f"for {v:g} s" if v is not None else "for good")
        elif self.action == "stall":
            what = f"radio stalled for {v or 0:g} s"
        elif self.action == "reboot":
            what = "strap power-cycled" + (f", off for {v:g} s" if v else "")
        else:
            what = f"battery at {v or 0:g} mV"
        return f"{self.role}: {what}"


def parse_step(spec: str, roles: Sequence[str] = ("therapist", "client")) -> ScriptStep:
    """``SECONDS:ROLE:ACTION[:VALUE]`` -> ScriptStep (ROLE one of ``roles``); an InputError naming the step and
    the fault."""
    parts = spec.strip().split(":")
    where = f"--at {spec!r}"
    if len(parts) not in (3, 4):
        raise InputError(f"{where}: expected SECONDS:ROLE:ACTION[:VALUE], e.g. 200:client:off:30")
    at_text, role, action = (p.strip() for p in parts[:3])
    at_s = _number(at_text, where, "SECONDS")
    if not 0.0 <= at_s <= MAX_STEP_S:
        raise InputError(f"{where}: SECONDS must be within 0..{MAX_STEP_S:g} (got {at_text})")
    if role not in roles:
        raise InputError(f"{where}: ROLE must be one of {', '.join(roles)} (got {role!r})")
    if action not in _ACTIONS:
        raise InputError(f"{where}: ACTION must be one of {', '.join(_ACTIONS)} (got {action!r})")
    required, allowed = _ACTIONS[action]
    value: float | None = None
    if len(parts) == 4:
        if not allowed:
            raise InputError(f"{where}: {action} takes no value")
        value = _number(parts[3].strip(), where, "VALUE")
        if action == "battery":
            if value != int(value):
                raise InputError(f"{where}: the battery voltage is whole millivolts (got {parts[3]})")
            try:
                check_battery_mv(int(value))
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
        elif action == "reboot" and not 0.0 <= value <= MAX_STEP_S:
            raise InputError(f"{where}: the time off must be 0..{MAX_STEP_S:g} s (got {parts[3]})")
        elif action != "reboot" and not 0.0 < value <= MAX_STEP_S:
            raise InputError(f"{where}: the duration must be more than 0 and at most {MAX_STEP_S:g} s (got {parts[3]})")
    elif required:
        unit = f"MV, {BATTERY_MV_RANGE[0]}..{BATTERY_MV_RANGE[1]}" if action == "battery" else "seconds"
        raise InputError(f"{where}: {action} needs a value ({unit})")
    return ScriptStep(at_s, role, action, value)


def _number(text: str, where: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {name} must be a number (got {text!r})") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {name} must be a finite number (got {text!r})")
    return value


async def apply_step(strap: VirtualStrap, step: ScriptStep) -> None:
    """Do one step to its strap now."""
    if step.action == "drop":
        strap.drop_link()
    elif step.action == "off":
        await strap.power_off(step.value)
    elif step.action == "stall":
        strap.stall_notifications(step.value)
    elif step.action == "reboot":
        await strap.reboot(off_s=step.value or 0.0)
    elif step.action == "battery":
        await strap.set_battery_mv(int(step.value or 0))


async def play_script(
    straps: Mapping[str, VirtualStrap],
    steps: Sequence[ScriptStep],
    say: Callable[[str], None],
    clock: Callable[[], float] | None = None,
) -> None:
    """Each step at its time (seconds of ``clock`` from now), said as it starts; ``say`` tells what happened.

    One strap's steps take turns, in time order (steps at the same time as given): a step due while that strap is
    still power-cycling (a reboot waits for the firmware to boot again) is done once it is back, and said with the
    time it was done. Different straps do not wait for each other. Cancelling stops the steps still to come."""
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    start = now()

    async def strap_steps(role: str) -> None:  # in time order (ties: as given), one after the other
        for step in sorted((step for step in steps if step.role == role), key=lambda step: step.at_s):
            await asyncio.sleep(max(0.0, start + step.at_s - now()))
            late_s = now() - start - step.at_s
            when = f"at {step.at_s:g} s" + (f" (done at {step.at_s + late_s:.0f} s)" if late_s > 0.5 else "")
            say(f"{when}: {step.describe()}")
            try:
                await apply_step(straps[role], step)
            except (OSError, TimeoutError, SimError) as exc:  # the strap could not do it: say so, play on
                say(f"{when}: {step.describe()} failed: {exc or type(exc).__name__}")

    tasks = [asyncio.create_task(strap_steps(role), name=f"script {role}") for role in {s.role for s in steps}]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
