"""What a virtual strap's sensor sees: a recording or a seeded synthetic breathing signal.

Both end as the strap's u16 ADC counts at the strap rate, through ``breathsync.adc`` (box
averaging over each strap period, then the 14-bit mean of four 12-bit conversions scaled to u16, as
the stretch sensor's driver returns it): exactly what the firmware's detector would get on a device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..adc import simulate_adc
from ..detector import check_rate
from ..errors import InputError
from ..recording import read_column
from ..scenarios import Kind, Options, Scenario, bundled_sources, make_scenario

Counts = npt.NDArray[np.int64]

MIN_SECONDS = 10.0
_SYNTH_OVERSAMPLE = 4  # the synthetic signal is made at 4x the strap rate, then ADC-averaged


def recording_counts(path: str | Path, sampling_rate: float, strap_rate_hz: int = 25, column: str = "resp") -> Counts:
    """A CSV/CSV.gz recording's ``column`` (sampled at ``sampling_rate``) as the strap's u16 counts."""
    check_rate(strap_rate_hz)
    if not sampling_rate > 0:
        raise InputError(f"input rate must be > 0 Hz (got {sampling_rate})")
    return signal_counts(
        read_column(path, column, sampling_rate=sampling_rate), sampling_rate, strap_rate_hz, str(path)
    )


def signal_counts(signal: npt.NDArray[np.float64], sampling_rate: float, strap_rate_hz: int, source: str) -> Counts:
    """A signal (no missing samples) sampled at ``sampling_rate`` as the strap's u16 counts."""
    check_rate(strap_rate_hz)
    seconds = len(signal) / sampling_rate
    if seconds < MIN_SECONDS:
        raise InputError(f"{source}: recording too short ({seconds:.1f} s, need at least {MIN_SECONDS:.0f} s)")
    return simulate_adc(signal, sampling_rate, strap_rate_hz).counts_u16.astype(np.int64)


def synthetic_breathing(seconds: float, bpm: float, sampling_rate: float, seed: int) -> npt.NDArray[np.float64]:
    """A plausible respiration trace: rate wandering around ``bpm`` (+-10 %), breath-to-breath depth
    changes, inhalation shorter than exhalation, slow baseline drift and sensor noise. Seeded.
    """
    if not 3.0 <= bpm <= 60.0:
        raise InputError(f"breathing rate must be within 3..60 breaths/min (got {bpm})")
    if seconds <= 0:
        raise InputError("duration must be > 0")
    rng = np.random.default_rng(seed)
    n = int(np.ceil(seconds * sampling_rate))
    t = np.arange(n) / sampling_rate
    # Breath rate: a slow random walk (time constant ~20 s), bounded to +-10 %.
    steps = rng.standard_normal(n) * np.sqrt(1.0 / sampling_rate)
    walk = np.zeros(n)
    alpha = 1.0 / (20.0 * sampling_rate)
    for i in range(1, n):
        walk[i] = walk[i - 1] * (1 - alpha) + 0.02 * steps[i]
    rate_hz = bpm / 60.0 * (1.0 + np.clip(walk, -0.1, 0.1))
    phase = np.cumsum(rate_hz) / sampling_rate + rng.uniform()
    frac = phase % 1.0
    # Asymmetric cycle: inhale over the first 40 %, exhale over the rest (raised-cosine halves).
    wave = np.where(frac < 0.4, 0.5 - 0.5 * np.cos(np.pi * frac / 0.4), 0.5 + 0.5 * np.cos(np.pi * (frac - 0.4) / 0.6))
    breath = np.floor(phase).astype(np.int64)
    depth = 1.0 + 0.15 * rng.standard_normal(int(breath.max()) + 2)
    baseline = 0.1 * np.sin(2 * np.pi * t / 97.0 + rng.uniform(0, 2 * np.pi))
    return np.asarray(depth[breath] * wave + baseline + 0.01 * rng.standard_normal(n), dtype=np.float64)


def synthetic_counts(seconds: float, bpm: float, strap_rate_hz: int = 25, seed: int = 0) -> Counts:
    """``synthetic_breathing`` through the strap's ADC: u16 counts at ``strap_rate_hz``."""
    check_rate(strap_rate_hz)
    rate = strap_rate_hz * _SYNTH_OVERSAMPLE
    signal = synthetic_breathing(seconds, bpm, rate, seed)
    return simulate_adc(signal, rate, strap_rate_hz).counts_u16.astype(np.int64)


SCENARIO_SECONDS = 360.0  # the bundled BIDMC recordings (8 min) allow 6 min after re-timing
# A scripted dyad plays its own breathing troubles (speech, a loose strap); radio gaps and clock drift are the
# sim's to script (``--at``, ``--*-drift-ppm``), so the generator adds none.
SCENARIO_OPTIONS = Options(gap_p=0.0, drift_p=0.0)


def scenario_feeds(kind: Kind, seed: int, strap_rate_hz: int = 25) -> tuple[Scenario, dict[str, Counts]]:
    """A seeded dyad of ``kind`` from the bundled recordings (``breathsync.scenarios``: known ground truth), as
    the therapist's and the client's strap counts."""
    sources = {s.name: s for s in bundled_sources()}
    scenario = make_scenario(kind, sources["bidmc_04"], sources["bidmc_18"], seed, SCENARIO_SECONDS, SCENARIO_OPTIONS)
    feeds = {
        role: signal_counts(signal, scenario.sampling_rate, strap_rate_hz, f"the {role}'s scripted breathing")
        for role, signal in (("therapist", scenario.therapist), ("client", scenario.client))
    }
    return scenario, feeds
