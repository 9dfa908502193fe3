"""The demo: a whole virtual session in about a minute and a half, no hardware, no ../shared.

Two virtual straps run the real firmware in the MicroPython unix port over a virtual BLE
controller (Bumble). They play real recordings bundled with the package, re-timed by the
scenario generator into a scripted session in which, after the baselines are learned, the
therapist's breathing starts following the client's. The real daemon connects to them through
bleak's Bumble backend, runs the engine, nudges the therapist's strap, stores the session and
writes the report.

Faster than real time: the straps' sample clocks run ``speed`` times fast (``time_scale``)
and the host's clock is scaled by the same factor, so
every timing the host sees — counters, arrivals, the engine's windows — is the session's own;
only the radio and the haptic pulses run in real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .adc import simulate_adc
from .daemon import Daemon, DaemonConfig
from .daemon.config import OutputsConfig, SessionConfig, StrapsConfig
from .errors import InputError
from .link.bumble_backend import BumbleBench
from .scenarios import Options, Scenario, bundled_sources, make_scenario

STRAP_RATE_HZ = 25
DEFAULT_SPEED = 5.0
DEFAULT_DURATION_S = 360.0
IN_FLIGHT_S = 0.3  # real seconds for the recordings' last samples to reach the host (a 300 ms flush at most)
DEFAULT_SEED = 7


@dataclass(frozen=True)
class DemoResult:
    session: Path
    report: Path
    summary_png: Path
    scenario: Scenario
    nudge_times_s: tuple[float, ...]
    wall_s: float
    stopped_early: bool = False  # ended by the caller's ``stop`` (Ctrl-C, SIGTERM, a closed terminal)
    session_s: float = 0.0  # session time recorded


def demo_scenario(duration_s: float = DEFAULT_DURATION_S, seed: int = DEFAULT_SEED) -> Scenario:
    """Therapist follows client from a scripted onset, built from two bundled recordings.

    The script is a clear case, as a demo should be: the therapist locks closely to the client
    (strong coupling, full rate convergence, a short lag) once both baselines are learned.
    """
    sources = {s.name: s for s in bundled_sources()}
    options = Options(
        baseline_s=140.0,
        min_episode_s=150.0,
        max_episode_s=170.0,
        speech_p=0.0,
        gap_p=0.0,
        flat_p=0.0,
        drift_p=0.0,
        coupling_rel=(0.9, 1.0),
        convergence=(0.9, 1.0),
        lag_s=(0.0, 0.6),
        rise_s=(3.0, 6.0),
        own_damping=(0.7, 0.8),
    )
    return make_scenario("therapist_follows", sources["bidmc_04"], sources["bidmc_18"], seed, duration_s, options)


def _scaled_clock(speed: float) -> Callable[[], float]:
    start = time.time()

    def clock() -> float:
        return start + (time.time() - start) * speed

    return clock


async def run_demo(
    out: TextIO,
    sessions: Path,
    speed: float = DEFAULT_SPEED,
    duration_s: float = DEFAULT_DURATION_S,
    seed: int = DEFAULT_SEED,
    stop: asyncio.Event | None = None,
) -> DemoResult:
    """Run the demo session; ``stop`` ends it early, keeping (and reporting) what was recorded."""
    from .research.report import write_report
    from .research.session import load_session
    from .sim import StrapConfig, VirtualBench

    started = time.monotonic()
    scenario = demo_scenario(duration_s, seed)
    onset, offset = scenario.onset_s or 0.0, scenario.offset_s or duration_s
    counts = {
        role: simulate_adc(signal, scenario.sampling_rate, STRAP_RATE_HZ).counts_u16
        for role, signal in (("therapist", scenario.therapist), ("client", scenario.client))
    }
    configs = [
        StrapConfig(counts["therapist"], role="therapist", drift_ppm=40, time_scale=speed, loop=False),
        StrapConfig(counts["client"], role="client", drift_ppm=-30, time_scale=speed, loop=False),
    ]
    out.write(
        f"breathsync demo: two virtual straps (the firmware in MicroPython, over a virtual BLE controller)\n"
        f"playing {duration_s / 60:.0f} min of real breathing at {speed:g}x speed; scripted: the therapist starts "
        f"following the client at {onset:.0f} s (until {offset:.0f} s)\n"
    )
    out.flush()
    config = DaemonConfig(
        session=SessionConfig(directory=str(sessions), resume=False),
        # The session's stored settings say what carried the data: the demo's own in-process Bumble link.
        straps=StrapsConfig(
            ble="bumble:in-process", therapist="ble:breathsync-therapist", client="ble:breathsync-client"
        ),
        outputs=OutputsConfig(lsl=False, status_interval_s=15.0),
    )
    clock = _scaled_clock(speed)
    async with await VirtualBench.start(configs) as straps, await BumbleBench.open(straps.link) as host:
        # The straps sample their recordings from boot; when those end a strap's sensor would only hold its last
        # value, so the session ends with them (plus what is in flight), not a fixed time after the daemon starts.
        recordings_end = time.monotonic() + duration_s / speed + IN_FLIGHT_S
        options = host.ble_options()
        daemon = Daemon(config, out, clock=clock, ble_options=options)
        end = asyncio.Event()
        task = asyncio.create_task(daemon.run(end))
        stopped = asyncio.create_task((stop or asyncio.Event()).wait())
        # FIRST_COMPLETED: asyncio.wait's default waits for both, and Ctrl-C only took effect when the recordings ended.
        await asyncio.wait(
            {task, stopped}, timeout=max(0.0, recordings_end - time.monotonic()), return_when=asyncio.FIRST_COMPLETED
        )
        stopped_early = stopped.done()
        stopped.cancel()
        end.set()
        summary = await task
    if not summary.kept:
        raise InputError("the demo was stopped before the virtual straps sent any data: no session kept")
    session = load_session(summary.path)
    files = write_report(session, summary.path.parent)
    nudge_times = tuple(n.t_s - session.t0_host_s for n in session.nudges)
    return DemoResult(
        summary.path,
        files.html,
        files.png,
        scenario,
        nudge_times,
        time.monotonic() - started,
        stopped_early,
        session.duration_s,
    )
