"""Re-time a real recording through a phase model: own tempo drift, speech, coupling to a leader.

A person's phase advances one cycle per breath of their source recording. Re-timing integrates

    dpsi/dt = omega_src(tau) * tempo(t) * convergence(t) * speech(t, psi)
              + K(t) / (2 pi) * sin(2 pi (phi_leader(t - lag) - psi))        [cycles/s]

and reads the source at tau(t), where dtau/dt = (dpsi/dt) / omega_src(tau). The follower thus
keeps its own waveform and its own breath-to-breath variability, while its phase is pulled toward
the leader's (phase coupling with a lag) and its mean rate toward the leader's (convergence).
Everybody - leaders and independent people too - goes through the same re-timing with their own
tempo drift, so 'was re-timed' is not a cue that separates conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sources import FloatArray, RespSource

STEP_S = 0.05
MIN_SPEED = 0.4
MAX_SPEED = 2.5


@dataclass(frozen=True)
class Warped:
    """A re-timed person: ``tau_s[i]`` is the source time shown at output step i (every STEP_S)."""

    tau_s: FloatArray
    phase_cycles: FloatArray  # unwrapped output phase at each step


def ou_log_tempo(rng: np.random.Generator, n_steps: int, sd: float, tau_s: float) -> FloatArray:
    """Slow random tempo drift (Ornstein-Uhlenbeck in log tempo), multiplicative factor around 1."""
    a = float(np.exp(-STEP_S / tau_s))
    noise = rng.normal(0.0, sd * np.sqrt(1 - a * a), n_steps)
    x = np.empty(n_steps)
    v = float(rng.normal(0.0, sd))
    for i in range(n_steps):
        v = a * v + noise[i]
        x[i] = v
    return np.exp(x)


def warp(
    src: RespSource,
    tau0_s: float,
    speed: FloatArray,
    rng: np.random.Generator,
    leader_phase: FloatArray | None = None,
    coupling_rad_s: FloatArray | None = None,
    speech: FloatArray | None = None,
    own_weight: FloatArray | None = None,
) -> Warped:
    """Integrate the phase model over ``len(speed)`` steps of STEP_S (see the module docstring).

    ``speed`` is tempo x convergence; ``leader_phase`` the leader's unwrapped phase at each step
    (already lagged); ``speech`` a 0/1 mask: inside it, exhalation (the first part of each cycle
    after end-inspiration) is slowed and inhalation sped up, with a new random ratio each breath.
    ``own_weight`` (0..1) scales the person's own breath-to-breath rate fluctuation in log terms: an
    entrained follower gives up part of their own irregularity.
    """
    peaks = src.peaks_s
    n = len(speed)
    tau = np.empty(n)
    phase = np.empty(n)
    k = max(0, int(np.searchsorted(peaks, tau0_s, side="right")) - 1)
    t = tau0_s
    med = float(np.median(np.diff(peaks)))
    exh, inh = 0.5, 1.8
    last_cycle = -1
    for i in range(n):
        while k + 1 < len(peaks) and peaks[k + 1] <= t:
            k += 1
        if k + 1 < len(peaks) and peaks[k] <= t:
            start, period = float(peaks[k]), float(peaks[k + 1] - peaks[k])
            psi = k + (t - start) / period
        else:  # outside the source's breaths: extrapolate with the median period
            period = med
            psi = k + (t - float(peaks[k])) / med
        omega = 1.0 / period
        own = omega if own_weight is None else (1.0 / med) * (omega * med) ** float(own_weight[i])
        dpsi = own * float(speed[i])
        if speech is not None and speech[i] > 0:
            cycle = int(np.floor(psi))
            if cycle != last_cycle:
                exh, inh, last_cycle = float(rng.uniform(0.3, 0.65)), float(rng.uniform(1.4, 2.2)), cycle
            dpsi *= exh if (psi - cycle) < 0.55 else inh
        if leader_phase is not None and coupling_rad_s is not None and coupling_rad_s[i] > 0:
            dpsi += float(coupling_rad_s[i]) / (2 * np.pi) * float(np.sin(2 * np.pi * (leader_phase[i] - psi)))
        tau[i] = t
        phase[i] = psi
        dtau = min(max(dpsi / omega, MIN_SPEED), MAX_SPEED)
        t += dtau * STEP_S
    return Warped(tau, phase)


def render(src: RespSource, warped: Warped, sampling_rate: float, n_out: int) -> FloatArray:
    """The source read at the re-timed clock, at ``sampling_rate``."""
    t_steps = np.arange(len(warped.tau_s)) * STEP_S
    t_out = np.arange(n_out) / sampling_rate
    tau = np.interp(t_out, t_steps, warped.tau_s)
    src_t = np.arange(len(src.signal)) / src.sampling_rate
    return np.interp(tau, src_t, src.signal)
