"""Haptic pattern state machine with device-side safety limits.

Pure module: no time, no machine. The caller passes a monotonic millisecond clock ``now_ms``
(``time.ticks_ms()`` on the device; any int clock in tests). Times are compared modulo 2**30
(the ESP32's ticks period; the unix port's 2**62 is a multiple), so differences must stay
below 2**29 ms (6 days); the core only compares times a few seconds apart while a pattern
runs, and forgets its duty history after an idle window, so wraparound cannot fool it.

A pattern is ``pulses`` x (``on_ms`` on at ``intensity_pct`` % PWM duty, then ``off_ms`` off).
The host asks; the strap clamps. Limits (defaults in firmware/config.py; the constructor can
only tighten the ABS_* ceilings below, never loosen them):

- ``max_on_ms`` (1000) per pulse: a coin ERM on skin for longer than ~1 s stops reading as a
  nudge and starts to feel like an alarm; it also bounds the heat a stalled motor can make.
- ``min_on_ms`` (20): shorter pulses do not spin an ERM up and are not felt.
- ``min_off_ms`` (50) .. ``max_off_ms`` (15000): pulses stay distinct; the longest gap is one
  breath at 4 breaths/min, so a pattern can pace breathing at the therapist's own rate.
- ``max_pulses`` (10): one command is at most 10 pulses (10 s of vibration at most).
- ``max_intensity_pct`` (80): PWM duty cap. From a 4.2 V LiPo, 80 % averages 3.4 V on a
  3 V-rated ERM (common parts allow 3.5 V) and caps motor current near 80 mA.
- Duty window: at most ``duty_max_pct`` (30) % on-time over any ``duty_window_ms`` (10 s)
  sliding window, i.e. 3 s of vibration in any 10 s: limits skin irritation and adaptation
  (felt vibration fades when continuous), motor heating, and the battery drain (the motor
  is the largest load after the radio). A pulse that would break the window budget is
  deferred (never shortened), so the rhythm stretches but every pulse is as asked. The
  window may be configured shorter (tighter), never longer.
- Control-loop stall: while a pattern runs ``tick`` must be called at least every
  ``stall_ms`` (100); a later tick aborts the pattern with the motor off (``stalls``).
  ``off_by_ms()`` gives the latest time the output may stay on without another tick: the
  driver arms a one-shot hardware timer with it (drivers/haptic.py), so a stalled loop turns
  the motor off on time, and the hardware WDT resets the chip if even that fails (main.py then turns
  the motor off first thing: the PWM runs on through a reset by software).
- Host silence: a running pattern is aborted if nothing was heard from the host for
  ``host_silent_ms`` (5000): the host must write something (any command or the time-sync
  ping) at least every few seconds while a pattern runs (``host_timeouts``).

If ``tick`` is called at ``deadline_ms()`` (or earlier), every limit holds exactly in the
output. A late tick can only lengthen an on-phase until ``off_by_ms()``, which the hardware
timer enforces; on-time is always accounted as actually observed, so later pulses are
deferred accordingly.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


# Compile-time ceilings: settings and constructor arguments can only go below these.
ABS_MAX_ON_MS = const(1000)
ABS_MIN_ON_MS = const(20)
ABS_MIN_OFF_MS = const(50)
ABS_MAX_OFF_MS = const(15000)
ABS_MAX_PULSES = const(10)
ABS_MAX_INTENSITY_PCT = const(80)
ABS_DUTY_WINDOW_MS = const(10000)
ABS_DUTY_MAX_PCT = const(30)
ABS_STALL_MS = const(100)
ABS_HOST_SILENT_MS = const(5000)

# Bits returned by start(): which fields were clamped to the limits.
CLAMP_PULSES = const(1)
CLAMP_ON = const(2)
CLAMP_OFF = const(4)
CLAMP_INTENSITY = const(8)

# Enough on-interval slots for the densest legal pattern in one window (min on + min off).
IV_SLOTS = const(ABS_DUTY_WINDOW_MS // (ABS_MIN_ON_MS + ABS_MIN_OFF_MS) + 2)

_MASK = const(0x3FFFFFFF)
_HALF = const(0x20000000)


def ticks_diff(a, b):
    """a - b for ms clocks that wrap at 2**30 (or any multiple of it)."""
    return ((a - b + _HALF) & _MASK) - _HALF


def _clamp(value, lo, hi):
    return lo if value < lo else hi if value > hi else value


class Haptics:
    """Haptic state machine. ``tick(now_ms)`` returns the PWM duty in % (0..100)."""

    def __init__(
        self,
        max_on_ms=ABS_MAX_ON_MS,
        min_on_ms=ABS_MIN_ON_MS,
        min_off_ms=ABS_MIN_OFF_MS,
        max_off_ms=ABS_MAX_OFF_MS,
        max_pulses=ABS_MAX_PULSES,
        max_intensity_pct=ABS_MAX_INTENSITY_PCT,
        duty_window_ms=ABS_DUTY_WINDOW_MS,
        duty_max_pct=ABS_DUTY_MAX_PCT,
        stall_ms=ABS_STALL_MS,
        host_silent_ms=ABS_HOST_SILENT_MS,
    ):
        self.min_on_ms = _clamp(min_on_ms, ABS_MIN_ON_MS, ABS_MAX_ON_MS)
        self.max_on_ms = _clamp(max_on_ms, self.min_on_ms, ABS_MAX_ON_MS)
        self.min_off_ms = _clamp(min_off_ms, ABS_MIN_OFF_MS, ABS_MAX_OFF_MS)
        self.max_off_ms = _clamp(max_off_ms, self.min_off_ms, ABS_MAX_OFF_MS)
        self.max_pulses = _clamp(max_pulses, 1, ABS_MAX_PULSES)
        self.max_intensity_pct = _clamp(max_intensity_pct, 0, ABS_MAX_INTENSITY_PCT)
        # A shorter window at the same share is tighter (two 5 s windows bound any 10 s);
        # a longer one would allow longer bursts, so the ceiling is also the maximum.
        self.duty_window_ms = _clamp(duty_window_ms, 1000, ABS_DUTY_WINDOW_MS)
        self.duty_max_pct = _clamp(duty_max_pct, 1, ABS_DUTY_MAX_PCT)
        self.window_on_ms = self.duty_window_ms * self.duty_max_pct // 100
        if self.max_on_ms > self.window_on_ms:
            self.max_on_ms = self.window_on_ms  # else a full pulse could never fit
        self.stall_ms = _clamp(stall_ms, 10, ABS_STALL_MS)
        self.host_silent_ms = _clamp(host_silent_ms, 100, ABS_HOST_SILENT_MS)
        # On-intervals (start, end) of the last window, oldest first, as a ring.
        self._iv = array("i", range(2 * IV_SLOTS))
        self._iv_first = 0
        self._iv_count = 0
        self.stalls = 0
        self.host_timeouts = 0
        self.deferrals = 0
        self.clamped = 0
        self.pulses_done = 0
        self.active = False
        self.on = False
        self.level_pct = 0
        self._pulses_left = 0
        self._on_ms = 0
        self._off_ms = 0
        self._phase_end = 0  # on: time the pulse ends; off: time the next pulse may start
        self._on_since = 0
        self._last_tick = 0
        self._last_host = 0
        self._last_off = 0
        self._last_off_valid = False
        # The latest off time given to the hardware timer (off_by_ms): a pulse ended by a command
        # while the control loop cannot apply it stays on physically until then.
        self._hw_off = 0
        self._deferred = False
        self.duty_pct = 0

    # ---- commands ----
    def start(self, now_ms, pulses, on_ms, off_ms, intensity_pct):
        """Replace any running pattern; returns CLAMP_* bits. 0 pulses or 0 % stops.

        Tick right after start()/stop() (GuardedMotor.step): a replaced pulse ends now in the
        accounting, so the output must follow now.
        """
        self.host_seen(now_ms)
        self.stop(now_ms)
        flags = 0
        if pulses <= 0 or intensity_pct <= 0:
            return flags
        if pulses > self.max_pulses:
            pulses = self.max_pulses
            flags |= CLAMP_PULSES
        v = _clamp(on_ms, self.min_on_ms, self.max_on_ms)
        if v != on_ms:
            flags |= CLAMP_ON
        on_ms = v
        v = _clamp(off_ms, self.min_off_ms, self.max_off_ms)
        if v != off_ms:
            flags |= CLAMP_OFF
        off_ms = v
        if intensity_pct > self.max_intensity_pct:
            intensity_pct = self.max_intensity_pct
            flags |= CLAMP_INTENSITY
        if flags:
            self.clamped += 1
        if intensity_pct <= 0:
            return flags
        idle = ticks_diff(now_ms, self._last_off)
        if idle > self.duty_window_ms or idle < 0:
            self._iv_count = 0  # all history is older than the window (or than a clock wrap)
        self._pulses_left = pulses
        self._on_ms = on_ms
        self._off_ms = off_ms
        self.level_pct = intensity_pct
        # First pulse now, or after min_off if a pulse just ended (a replaced pattern). A negative idle is a pulse
        # that ended more than half the ticks period ago (6.2 days), not one in the future: no wait.
        self._phase_end = now_ms & _MASK
        if self._last_off_valid and 0 <= idle < self.min_off_ms:
            self._phase_end = (self._last_off + self.min_off_ms) & _MASK
        self._last_tick = now_ms & _MASK
        self._deferred = False
        self.active = True
        return flags

    def stop(self, now_ms):
        """Motor off, pattern cancelled (on-time so far is kept in the duty history)."""
        if self.on:
            self._end_pulse(now_ms)
        self.active = False
        self.duty_pct = 0

    def host_seen(self, now_ms):
        """Call on every packet from the host: keeps a running pattern alive."""
        self._last_host = now_ms & _MASK

    # ---- the control loop ----
    def tick(self, now_ms):
        """Advance to ``now_ms``; returns the duty (%) to apply now."""
        if not self.active:
            self.duty_pct = 0
            return 0
        now_ms &= _MASK
        gap = ticks_diff(now_ms, self._last_tick)
        self._last_tick = now_ms
        if gap > self.stall_ms:
            self.stalls += 1
            return self._abort(now_ms)
        if ticks_diff(now_ms, self._last_host) >= self.host_silent_ms:
            self.host_timeouts += 1
            return self._abort(now_ms)
        if self.on:
            if ticks_diff(now_ms, self._phase_end) < 0:
                return self.duty_pct
            self._end_pulse(now_ms)
            self._pulses_left -= 1
            self.pulses_done += 1
            if self._pulses_left <= 0:
                self.active = False
                return 0
            self._phase_end = (now_ms + self._off_ms) & _MASK
            return 0
        if ticks_diff(now_ms, self._phase_end) < 0:
            return 0
        if self._window_used(now_ms, self._on_ms) + self._on_ms > self.window_on_ms or self._iv_count >= IV_SLOTS:
            if not self._deferred:
                self._deferred = True
                self.deferrals += 1
            return 0
        self._deferred = False
        self.on = True
        self._on_since = now_ms
        self._phase_end = (now_ms + self._on_ms) & _MASK
        self.duty_pct = self.level_pct
        return self.duty_pct

    def deadline_ms(self, now_ms):
        """Latest time of the next tick for exact timing (now_ms when idle: no tick needed)."""
        if not self.active:
            return now_ms & _MASK
        # Half the stall limit, so a punctual loop never races the hardware off-timer.
        d = self.stall_ms >> 1
        t = ticks_diff(self._phase_end, now_ms)
        if t < d:
            d = t
        t = ticks_diff(self._last_host + self.host_silent_ms, now_ms)
        if t < d:
            d = t
        if self._deferred and d > self.min_off_ms:
            d = self.min_off_ms  # poll the window budget
        return (now_ms + (d if d > 0 else 0)) & _MASK

    def off_by_ms(self, now_ms):
        """Latest time the output may stay on if no tick comes (arm the hardware timer)."""
        if not self.on:
            return now_ms & _MASK
        d = self.stall_ms
        t = ticks_diff(self._phase_end, now_ms)
        if t < d:
            d = t
        t = ticks_diff(self._last_host + self.host_silent_ms, now_ms)
        if t < d:
            d = t
        self._hw_off = (now_ms + (d if d > 0 else 0)) & _MASK
        return self._hw_off

    # ---- internals ----
    def _abort(self, now_ms):
        if self.on:
            self._end_pulse(now_ms)
        self.active = False
        self.duty_pct = 0
        return 0

    def _end_pulse(self, now_ms):
        now_ms &= _MASK
        # Account for on-time until the hardware timer's off time when that is later: the
        # driver may not apply an off commanded between ticks before the timer fires.
        end_ms = now_ms
        if ticks_diff(self._hw_off, now_ms) > 0 and ticks_diff(self._hw_off, self._on_since) > 0:
            end_ms = self._hw_off
        self.on = False
        self.duty_pct = 0
        self._last_off = now_ms
        self._last_off_valid = True
        if self._iv_count >= IV_SLOTS:  # cannot happen with legal limits; keep newest
            self._iv_first = (self._iv_first + 1) % IV_SLOTS
            self._iv_count -= 1
        slot = (self._iv_first + self._iv_count) % IV_SLOTS
        self._iv[2 * slot] = self._on_since
        self._iv[2 * slot + 1] = end_ms
        self._iv_count += 1

    def _window_used(self, now_ms, on_ms):
        """Past on-time within [now + on_ms - window, now]; drops intervals older than a window.

        A pulse [now, now + on_ms] keeps every window within budget iff this plus on_ms fits:
        windows ending inside the pulse hold at most what the one ending at its end holds.
        """
        start = (now_ms + on_ms - self.duty_window_ms) & _MASK
        used = 0
        k = 0
        while k < self._iv_count:
            slot = (self._iv_first + k) % IV_SLOTS
            end = self._iv[2 * slot + 1]
            age = ticks_diff(now_ms, end)
            if k == 0 and (age >= self.duty_window_ms or age < -self.stall_ms):
                # Oldest first: left the window (or is from before a clock wrap; an end up to a
                # stall period ahead is a pulse accounted until its hardware off time).
                self._iv_first = (self._iv_first + 1) % IV_SLOTS
                self._iv_count -= 1
                continue
            s = self._iv[2 * slot]
            if ticks_diff(s, start) < 0:
                s = start
            d = ticks_diff(end, s)
            if d > 0:
                used += d
            k += 1
        return used
