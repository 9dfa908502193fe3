"""Nudge policy: when a therapist-follows decision may actually buzz the therapist, and how.

Kept apart from the detection so that a clinic can change the ergonomics (cooldown, caps,
mute) without touching the statistics, and so that the policy can be tested with a fake clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .config import PolicyConfig
from .state import HapticPattern

HOUR_S = 3600.0
DOUBLE_GAP_MS = 150


def haptic_pattern(config: PolicyConfig, baseline_rate_bpm: float | None) -> HapticPattern:
    """The pattern to play. 'paced' pulses at the therapist's own baseline rate, on for the
    inhalation half of each breath: an invitation to return to their own rhythm, not a new one."""
    if config.pattern == "paced" and baseline_rate_bpm and baseline_rate_bpm > 0:
        period_ms = round(60000.0 / baseline_rate_bpm)
        on_ms = period_ms // 2
        return HapticPattern(config.pulse_count, on_ms, period_ms - on_ms, config.intensity_pct)
    if config.pattern == "double":
        return HapticPattern(2, config.pulse_on_ms, DOUBLE_GAP_MS, config.intensity_pct)
    return HapticPattern(1, config.pulse_on_ms, 0, config.intensity_pct)


@dataclass(frozen=True)
class PolicyVerdict:
    allowed: bool
    reason: str  # "ok", "muted", "cooldown", "hourly_cap", "episode_cap"


class NudgePolicy:
    """Cooldown, hourly cap, the cap per episode and the 'mirroring on purpose' mute, all on the engine's clock.

    An episode is what the therapist follows without a break: its nudges count until the pair has been apart
    (``observe``) for ``decoupled_s``, the same test as a nudge's efficacy."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self._sent_s: deque[float] = deque()
        self._mute_until_s: float | None = None
        self._episode_s: list[float] = []  # nudges since the pair was last apart for decoupled_s
        self._apart_since_s: float | None = None

    def mute(self, now_s: float, duration_s: float | None = None) -> float:
        """The therapist mirrors on purpose: hold nudges; they resume by themselves. Returns the end."""
        self._mute_until_s = now_s + (self.config.mute_s if duration_s is None else duration_s)
        return self._mute_until_s

    def is_muted(self, now_s: float) -> bool:
        if self._mute_until_s is not None and now_s >= self._mute_until_s:
            self._mute_until_s = None  # auto-resume
        return self._mute_until_s is not None

    def muted_for_s(self, now_s: float) -> float:
        """Seconds of mute left at ``now_s`` (0: not muted)."""
        return self._mute_until_s - now_s if self.is_muted(now_s) and self._mute_until_s is not None else 0.0

    def check(self, now_s: float) -> PolicyVerdict:
        if self.is_muted(now_s):
            return PolicyVerdict(False, "muted")
        if self._sent_s and now_s - self._sent_s[-1] < self.config.cooldown_s:
            return PolicyVerdict(False, "cooldown")
        while self._sent_s and now_s - self._sent_s[0] >= HOUR_S:
            self._sent_s.popleft()
        if len(self._sent_s) >= self.config.max_per_hour:
            return PolicyVerdict(False, "hourly_cap")
        self._end_episode_if_apart(now_s)
        if len(self._episode_s) >= self.config.max_per_episode:
            return PolicyVerdict(False, "episode_cap")
        return PolicyVerdict(True, "ok")

    def record(self, now_s: float) -> None:
        self._sent_s.append(now_s)
        self._episode_s.append(now_s)

    def observe(self, now_s: float, apart: bool) -> None:
        """One engine update: is the pair apart (not locked, or the client following), or not (locked, or no
        estimate: a drop-out and the updates without a window after it)?"""
        if not apart:
            self._apart_since_s = None
        elif self._apart_since_s is None:
            self._apart_since_s = now_s
        self._end_episode_if_apart(now_s)

    def _end_episode_if_apart(self, now_s: float) -> None:
        if self._apart_since_s is not None and now_s - self._apart_since_s >= self.config.decoupled_s:
            self._episode_s.clear()

    def forget(self, sent_s: float) -> None:
        """A recorded nudge was not delivered: it no longer counts for cooldown or either cap."""
        if sent_s in self._sent_s:
            self._sent_s.remove(sent_s)
        if sent_s in self._episode_s:
            self._episode_s.remove(sent_s)
