"""Speech breathing for tests: what a strap sees while its wearer talks."""

from __future__ import annotations

import numpy as np


def talking(duration_s: float, sampling_rate: float, seed: int) -> np.ndarray:
    """A quick inhalation (0.4-0.7 s) before a long, uneven exhalation (3-7 s), as while speaking."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sampling_rate)
    parts: list[np.ndarray] = []
    total = 0
    while total < n:
        inhale = int(rng.uniform(0.4, 0.7) * sampling_rate)
        exhale = int(rng.uniform(3.0, 7.0) * sampling_rate)
        rise = -np.cos(np.linspace(0, np.pi, inhale, endpoint=False))
        # Speaking lets the air out in phrases: a slow, stepped fall from the top to the bottom.
        fall = np.cos(np.linspace(0, np.pi, exhale, endpoint=False)) + 0.1 * np.sin(np.linspace(0, 6 * np.pi, exhale))
        parts += [rise, fall]
        total += inhale + exhale
    return np.concatenate(parts)[:n] + 0.02 * rng.normal(size=n)


def talking_in_phrases(duration_s: float, sampling_rate: float, seed: int) -> np.ndarray:
    """Talk in phrases: a long phrase (a quick 0.4-0.6 s inhalation, 4-6 s of speech) and four short ones between
    breaths taken less hastily (0.8-0.95 s in, 1.8-2.3 s out): the short phrases' inhalation is ~0.3 of their cycle,
    as much as quiet breathing's lowest, so only the long phrases look like speech cycle by cycle."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sampling_rate)
    parts: list[np.ndarray] = []
    total, k = 0, 0
    while total < n:
        long_phrase = k % 5 == 0
        inhale = int(rng.uniform(*((0.4, 0.6) if long_phrase else (0.8, 0.95))) * sampling_rate)
        exhale = int(rng.uniform(*((4.0, 6.0) if long_phrase else (1.8, 2.3))) * sampling_rate)
        rise = -np.cos(np.linspace(0, np.pi, inhale, endpoint=False))
        fall = np.cos(np.linspace(0, np.pi, exhale, endpoint=False))
        parts += [rise, fall]
        total += inhale + exhale
        k += 1
    return np.concatenate(parts)[:n] + 0.02 * rng.normal(size=n)
