"""Score detected breaths against annotations (one-to-one matching within a tolerance)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class MatchScore:
    true_positives: int
    n_detected: int
    n_reference: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.n_detected if self.n_detected else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.n_reference if self.n_reference else 0.0

    @property
    def f1(self) -> float:
        total = self.n_detected + self.n_reference
        return 2 * self.true_positives / total if total else 1.0

    def __add__(self, other: MatchScore) -> MatchScore:
        return MatchScore(
            self.true_positives + other.true_positives,
            self.n_detected + other.n_detected,
            self.n_reference + other.n_reference,
        )


def match_events(detected_s: npt.ArrayLike, reference_s: npt.ArrayLike, tolerance_s: float) -> MatchScore:
    """Greedy one-to-one matching of two sorted time lists, nearest pairs first.

    Each reference mark pairs with at most one detection and vice versa; a pair counts when
    the two times differ by at most ``tolerance_s``.
    """
    det = np.sort(np.asarray(detected_s, dtype=np.float64))
    ref = np.sort(np.asarray(reference_s, dtype=np.float64))
    candidates: list[tuple[float, int, int]] = []
    j0 = 0
    for i, t in enumerate(det):
        while j0 < len(ref) and ref[j0] < t - tolerance_s:
            j0 += 1
        j = j0
        while j < len(ref) and ref[j] <= t + tolerance_s:
            candidates.append((abs(float(ref[j] - t)), i, j))
            j += 1
    candidates.sort()
    used_det: set[int] = set()
    used_ref: set[int] = set()
    for _, i, j in candidates:
        if i not in used_det and j not in used_ref:
            used_det.add(i)
            used_ref.add(j)
    return MatchScore(len(used_det), len(det), len(ref))


def add_baseline_wander(
    signal: npt.NDArray[np.float64], sampling_rate: float, depths: float, period_s: float
) -> npt.NDArray[np.float64]:
    """``signal`` plus a slow sine of amplitude ``depths`` breath depths and period ``period_s``.

    A strap shifting on the chest moves the signal's baseline by about a breath's depth. The
    breath depth is the median range of the signal over 4 s windows.
    """
    window = max(1, int(4 * sampling_rate))
    ranges = [np.ptp(signal[i : i + window]) for i in range(0, max(1, len(signal) - window), window)]
    depth = float(np.median(ranges))
    t_s = np.arange(len(signal)) / sampling_rate
    return signal + depths * depth * np.sin(2 * np.pi * t_s / period_s)
