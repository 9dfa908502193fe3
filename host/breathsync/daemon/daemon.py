"""The session daemon: two straps in, engine and store in the middle, nudges and outputs out.

Data flow (all on one asyncio loop): each strap's link delivers samples and breath events to
the daemon's sink callbacks (``on_samples``, ``on_event``, ...), which write them to the session
store (raw samples with counters and host times), push them to LSL, and feed live data to the
entrainment engine on session time. A ticker
advances the engine's clock, turns nudges into haptic commands for the therapist's strap
(confirmed by the strap), records efficacy, and prints the status line. Decisions pause by
themselves while a strap is missing (the engine sees the gap), so gaps never cause nudges.

After a crash (``kill -9``) the next start reopens the newest unfinished session: the engine is
rebuilt from the stored data (nudges already sent are not repeated) and each strap's link
resumes after the last stored counter, so the strap's backfill closes the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..engine import (
    Baseline,
    Efficacy,
    EngineState,
    EntrainmentEngine,
    HapticPattern,
    Nudge,
    Output,
    Role,
    StrapBlock,
    StrapBreath,
)
from ..engine.baseline_file import BaselineFile, read_baseline_file, store_baseline, stored_calibration
from ..engine.config import stored_config
from ..errors import InputError
from ..link.ble import AdapterGone, BleOptions
from ..link.clock import steady_wall_clock
from ..link.session import CommandUnanswered, LinkError
from ..link.sources import (
    ROLES,
    StrapLink,
    ble_adapter,
    close_links,
    find_by_roles,
    looking_for,
    open_link,
    open_sources,
    unless_stopped,
)
from ..link.stream import SampleBlock, StrapEvent
from ..protocol import HapticCommand, ProtocolError, ResultCode, StatusPacket
from ..protocol.packets import (
    HAPTIC_MAX_OFF_MS,
    HAPTIC_MAX_ON_MS,
    HAPTIC_MAX_PULSES,
    HAPTIC_MIN_OFF_MS,
    HAPTIC_MIN_ON_MS,
)
from ..small_files import expanded
from ..store import (
    SaveFailed,
    SessionLock,
    SessionStore,
    StoreError,
    StrapInfo,
    remove_session_files,
)
from .config import DaemonConfig
from .lsl import LslOutlets
from .rebuild import session_rate_hz, stored_stream, timed_breath
from .session_files import session_path
from .status import PersonView, status_due, status_line

TICK_S = 0.25
DAEMON_CLOSE_WAIT_S = 5.0  # links get this long to end at shutdown (the store is closed after them)


def device_haptic(pattern: HapticPattern) -> HapticCommand:
    """The engine's pattern as a HAPTIC command within the strap's limits, keeping its rhythm.

    A paced pattern marks each breath of the therapist's own rate: the pulse period (on + off)
    is kept, the pulse shortened to at most a quarter of it (the strap allows 30 % duty over any
    10 s and would otherwise defer pulses, breaking the pace) and to the per-pulse maximum.
    """
    pulses = min(max(pattern.pulse_count, 1), HAPTIC_MAX_PULSES)
    period_ms = pattern.on_ms + pattern.off_ms
    on_ms = min(max(pattern.on_ms, HAPTIC_MIN_ON_MS), HAPTIC_MAX_ON_MS)
    off_ms = 0
    if pulses > 1:
        on_ms = max(HAPTIC_MIN_ON_MS, min(on_ms, period_ms // 4))
        off_ms = min(max(period_ms - on_ms, HAPTIC_MIN_OFF_MS), HAPTIC_MAX_OFF_MS)
    intensity = min(max(pattern.intensity_pct, 1), 100)
    return HapticCommand(0, pulses, on_ms, off_ms, intensity)


LINK_STATES = {"connected": "ok", "disconnected": "LOST", "connect-failed": "retrying", "closed": "closed"}


# Battery levels said once each, on a line of their own: a strap going flat mid-session stops nudging unnoticed.
BATTERY_WARNINGS_PCT = (  # the most severe first: only the lowest level reached is said
    (5, "it may stop within minutes: charge it now if you can"),
    (15, "charge it after this session"),
)


@dataclass
class SessionSummary:
    path: Path
    resumed: bool
    duration_s: float = 0.0
    samples: dict[str, int] = field(default_factory=dict)
    nudges: int = 0
    nudges_confirmed: int = 0
    kept: bool = True  # False: the run recorded nothing, and its new session file was removed


def _runs(counters: Iterable[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive ``counters`` (ascending)."""
    first = last = None
    for c in counters:
        if last is not None and c == last + 1:
            last = c
            continue
        if first is not None and last is not None:
            yield first, last
        first = last = c
    if first is not None and last is not None:
        yield first, last


class Daemon:
    def __init__(
        self,
        config: DaemonConfig,
        out: TextIO = sys.stdout,
        clock: Callable[[], float] | None = None,
        ble_options: BleOptions | None = None,
    ) -> None:
        self.config = config
        self._given_rate_hz = config.straps.rate_hz  # a continued session runs at its own (``_keep_stored_settings``)
        self.ble_options = ble_options  # a ready BLE adapter (the demo's in-process bench) over straps.ble
        self.out = out
        self._tty = out.isatty()
        self._zero_s: float | None = None  # host time of the session's first sample: the report's session zero
        self._console_gone = False  # set when writing to ``out`` failed: the session goes on without a console
        self.clock = clock or steady_wall_clock()  # Unix time without the wall clock's steps (link.clock)
        self.views = {role: PersonView() for role in ROLES}
        self.links: dict[Role, StrapLink] = {}
        path = config.session.therapist_baseline
        self.calibration: BaselineFile | None = read_baseline_file(expanded(path)) if path else None
        self.engine = EntrainmentEngine(config.engine, self.therapist_baseline)
        self.state: EngineState | None = None
        self.nudge_ids: dict[float, int] = {}
        self._undelivered: set[int] = set()  # nudges the strap did not take: not on the status line's count
        self._nudge_tasks: set[asyncio.Task[None]] = set()
        # A storage failure inside a link callback: link libraries log and swallow what their callbacks
        # raise, so it is kept here and raised by the session loop (``_tick``), which ends the session.
        self.store_failure: StoreError | None = None
        self._told_failures: dict[str, set[str]] = {}  # connect failures shown per strap since it last connected
        self._mute_said = False  # a mute was said to have begun: its end by itself is said too
        self._made_dirs: list[Path] = []  # folders this run made for its session file
        self._lost_at: dict[str, float] = {}  # strap -> when it was said to be disconnected (until it is back)
        self.store: SessionStore | None = None
        self.t0_s = 0.0
        self.lsl: LslOutlets | None = None
        self._replaying = False
        self._last_status: float | None = None
        self._told_inverted: set[str] = set()
        self._told_battery: dict[str, int] = {}  # role -> the lowest warning level said
        self._stored_battery: dict[str, int] = {}  # role -> the battery level last recorded in the session
        # What the session records of each strap: the name it advertised when found by role, and the address its link
        # connected to (a strap given by name or found by role was stored under one text for both).
        self._strap_names: dict[str, str] = {}
        self._strap_addresses: dict[str, str] = {}

    # -- session time --------------------------------------------------------------------------

    def session_s(self, host_t_s: float) -> float:
        return host_t_s - self.t0_s

    # -- sink callbacks (called by the links on the loop thread) -----------------------------------

    @contextlib.contextmanager
    def _recording(self) -> Iterator[bool]:
        """Around a callback's store writes: yields False once storage has failed (nothing more is written)."""
        if self.store_failure is not None or self.store is None:
            yield False
            return
        try:
            yield True
        except StoreError as exc:
            self.store_failure = exc

    def on_samples(self, block: SampleBlock) -> None:
        if not block.backfilled:
            self.views[block.role].last_data_s = self.clock()
        with self._recording() as ok:
            if ok:
                self._on_samples(block)

    def _on_samples(self, block: SampleBlock) -> None:
        assert self.store is not None
        counters = block.counters.tolist()
        # Sent again after a drop-out: what was stored already (the run before a crash had it live) is not late.
        stored = self.store.stored_counters(block.role, counters[0], counters[-1]) if block.backfilled else set()
        if not block.backfilled:
            # When and in which order it reached the engine, for a replay: after a stall it is seconds late. Before
            # the samples: a crash between the two must not leave them without it (a replay would date them early).
            self.store.add_arrival(block.role, "samples", counters[0], counters[-1], self.clock())
        self.store.add_samples(block.role, counters, block.host_t_s.tolist(), block.values.tolist())
        first_s = float(block.host_t_s[0])
        if self._zero_s is None or first_s < self._zero_s:
            self._zero_s = first_s
        self.views[block.role].samples += len(block.values)
        if self.lsl is not None:
            self.lsl.push_samples(block.role, block.values.tolist(), block.host_t_s.tolist())
        if block.backfilled:
            # The engine is causal: late data only goes to the record, marked so that a replay can leave it out too.
            for first, last in _runs(c for c in counters if c not in stored):
                self.store.add_late_samples(block.role, first, last)
            return
        period = 1.0 / self.config.straps.rate_hz
        item = StrapBlock(block.role, self.session_s(float(block.host_t_s[0])), period, block.values)
        self._handle(self.engine.feed(item))

    def on_event(self, event: StrapEvent) -> None:
        with self._recording() as ok:
            if ok:
                self._on_event(event)

    def _on_event(self, event: StrapEvent) -> None:
        assert self.store is not None
        new = self.store.add_event(event)
        if self.lsl is not None:
            self.lsl.push_event(event.role, event.kind, event.host_t_s, event.depth_counts)
        if event.backfilled:
            if new:  # one stored already (by the run before a crash) reached that engine in time
                self.store.add_late_event(event.role, event.kind, event.counter)
            return
        if not new:  # stored by the run before a quick restart: its engine, rebuilt from the session, has it
            return
        breath = timed_breath(event, self.t0_s, self.config.straps.rate_hz)
        self.store.add_arrival(event.role, event.kind, event.counter, event.counter, self.clock())
        self._handle(self.engine.feed(StrapBreath(event.role, breath)))

    def on_status(self, role: Role, status: StatusPacket) -> None:
        view = self.views[role]
        view.battery_pct = status.battery_pct
        self._tell_battery(role, status.battery_pct)
        view.firmware = ".".join(str(v) for v in status.fw_version)
        with self._recording() as ok:
            if not ok:
                return
            assert self.store is not None
            link = self.links.get(role)
            target = "" if link is None else str(link.address)
            address = self._strap_addresses.get(role, target)
            name = self._strap_names.get(role, target)
            self.store.set_strap(
                StrapInfo(role, address, name, view.firmware, status.protocol_version[0], status.sample_rate_hz),
                self.clock(),
            )
            # Each change of level (every 10 s at most, by the strap's gauge), so the report can say whether a strap
            # ran low: the live warnings alone left no trace once the terminal was closed.
            if status.battery_pct is not None and status.battery_pct != self._stored_battery.get(role):
                self._stored_battery[role] = status.battery_pct
                self.store.add_link_event(self.clock(), role, "battery", f"{status.battery_pct}%")

    def on_link(self, role: Role, kind: str, detail: str) -> None:
        state = LINK_STATES.get(kind)
        if state is not None:  # the status line shows the link's state, not its latest event (a reboot, a loss)
            self.views[role].link = state
        with self._recording() as ok:
            if ok:
                assert self.store is not None
                self.store.add_link_event(self.clock(), role, kind, detail)
                link = self.links.get(role)
                stream = link.counters if link is not None and kind == "strap-rebooted" else None
                if stream is not None:
                    # Stored counters now run ahead of the strap's own by this much; a resumed run needs it.
                    self.store.set_meta(f"counter_offset.{role}", str(stream.offset))
        if kind in ("samples-lost", "rate-refused"):
            self._line(f"{role} strap: {detail}")
        elif kind == "rate-set":  # a session records at one rate
            self._line(f"{role} strap: {detail}; the rate is straps.rate_hz in the configuration")
        elif kind in ("disconnected", "strap-rebooted"):
            said = {"strap-rebooted": "restarted, carrying on"}.get(kind, kind)
            self._line(f"{role} strap: {said}" + (f" ({detail})" if detail else ""))
            if kind == "disconnected":
                self._lost_at.setdefault(role, self.clock())
        elif kind == "connect-failed" and detail not in self._told_failures.setdefault(role, set()):
            # Why it keeps retrying, once per reason until it connects (it retries every few seconds; the store
            # has every try).
            self._told_failures[role].add(detail)
            self._line(f"{role} strap: cannot connect ({detail}); retrying")
        elif kind == "connected":
            if detail:
                self._strap_addresses[role] = detail
            self._told_failures.pop(role, None)
            self.views[role].last_data_s = self.clock()  # its silence counts from now, not from before the drop-out
            lost_at = self._lost_at.pop(role, None)
            if lost_at is not None:  # 'disconnected' and 'retrying' were said; without this line only the status line
                self._line(f"{role} strap: connected again after {self.clock() - lost_at:.0f} s")

    # -- engine outputs ----------------------------------------------------------------------------

    def _handle(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, EngineState):
                self._tell_polarity()
                self.state = output
                self.views["therapist"].rate_bpm = output.therapist_rate_bpm
                self.views["client"].rate_bpm = output.client_rate_bpm
                if not self._replaying and self.store is not None:
                    # Store rows on the host (wall) clock like the samples; the dict keeps session time.
                    self.store.add_state(self.t0_s + output.t_s, output.as_json_dict())
            elif isinstance(output, Nudge):
                if self._replaying:
                    continue  # sent before the crash
                assert self.store is not None
                nudge_id = self.store.add_nudge(self.t0_s + output.t_s, output.as_json_dict())
                self.nudge_ids[round(output.t_s, 3)] = nudge_id
                if self.lsl is not None:
                    self.lsl.push_nudge(self.t0_s + output.t_s, output.pattern_name)
                task = asyncio.get_running_loop().create_task(self._send_nudge(output, nudge_id))
                self._nudge_tasks.add(task)
                task.add_done_callback(self._nudge_tasks.discard)
            elif isinstance(output, Efficacy):
                if self._replaying or self.store is None:
                    continue
                nudged = self.nudge_ids.get(round(output.nudge_t_s, 3))
                if nudged is not None:
                    self.store.set_nudge_efficacy(nudged, output.as_json_dict())

    async def _send_nudge(self, nudge: Nudge, nudge_id: int) -> None:
        link = self.links.get("therapist")
        command = device_haptic(nudge.pattern)
        delivered: bool | None = False  # None: sent, but no answer came (it may have been felt)
        detail = "therapist: no link"
        if link is not None:
            try:
                response = await link.haptic(command)
                delivered = response.ok
                detail = "" if delivered else f"therapist: strap refused ({response.result.name})"
                if response.result == ResultCode.INTERNAL_ERROR:
                    detail += (
                        " (most likely it cannot vibrate: haptics off in its settings, or its motor driver failing)"
                    )
            except CommandUnanswered as exc:
                # The strap may have played it (an outside review: the motor ran, the answer was lost with the
                # link): it keeps counting for the cooldown and both caps, or the therapist could be nudged twice
                # in one episode, and its efficacy is still measured.
                delivered, detail = None, str(exc)
            except (LinkError, ProtocolError) as exc:
                detail = str(exc)
        if delivered is False:
            # The therapist felt nothing: the nudge must not hold back the next one (cooldown, either cap)
            # nor be judged for efficacy. The engine pauses while the strap is away, so a therapist still
            # following is nudged again once it is back and following has built up anew.
            self.engine.nudge_undelivered(nudge.t_s)
            self._undelivered.add(nudge_id)
        with self._recording() as ok:
            if ok:
                assert self.store is not None
                kind = {True: "nudge-confirmed", False: "nudge-failed", None: "nudge-unconfirmed"}[delivered]
                self.store.add_link_event(self.clock(), "therapist", kind, detail)
                self.store.set_nudge_delivery(nudge_id, delivered, detail)
        outcome = {
            True: "confirmed by the strap",
            False: f"NOT delivered: {detail}",
            None: f"not confirmed, counted as given: {detail}",
        }[delivered]
        self._line(f"NUDGE ({nudge.pattern_name}) {outcome}")

    def mute(self) -> None:
        """'Mirroring on purpose' (m + Enter): hold nudges; they resume by themselves after policy.mute_s.
        Pressed again while muted, it ends the mute at once."""
        now_s = self.session_s(self.clock())
        ending = self.engine.policy.is_muted(now_s)
        until_s = self.engine.mute(0.0 if ending else None, now_s=now_s)
        minutes = max(0.0, until_s - now_s) / 60
        with self._recording() as ok:
            if ok:
                assert self.store is not None
                # Read back by store.mute_duration_s: a resumed run and `replay SESSION` mute as live did
                # (an ended mute is a mute of 0 min from then).
                self.store.add_link_event(self.clock(), "therapist", "muted", f"{minutes:g} min")
        self._mute_said = not ending
        if ending:
            self._line("mute ended: nudges are back on")
        else:
            self._line(
                f"nudges muted for {minutes:.0f} min (mirroring on purpose); they resume by themselves "
                "(m + Enter again to end it now)"
            )

    def _say_mute_over(self, now_s: float) -> None:
        """A mute that ran out by itself is said, as one ended with m + Enter is (a soak review: the status line's
        '(muted, N min left)' just disappeared)."""
        if self._mute_said and not self.engine.policy.is_muted(self.session_s(now_s)):
            self._mute_said = False
            self._line("the mute is over: nudges are back on")

    # -- status line -------------------------------------------------------------------------------

    def status_line(self) -> str:
        now_s = self.clock()
        return status_line(
            now_s,
            self._zero_s,
            self.views,
            self.state,
            self.engine,
            self.session_s(now_s),
            len(self.nudge_ids) - len(self._undelivered),  # nudges the therapist may have felt
        )

    def _tell_battery(self, role: str, battery_pct: int | None) -> None:
        for level_pct, advice in BATTERY_WARNINGS_PCT:
            if battery_pct is not None and battery_pct <= level_pct:
                if level_pct < self._told_battery.get(role, 101):
                    self._told_battery[role] = level_pct
                    self._line(f"the {role}'s strap battery is at {battery_pct}%: {advice}")
                return

    def _tell_polarity(self) -> None:
        """Once per strap, when the engine first reads its signal upside down (normally at the baselines)."""
        for role, inverted in self.engine.inverted.items():
            if inverted and role not in self._told_inverted:
                self._told_inverted.add(role)
                self._line(
                    f"the {role}'s strap signal looks upside down (inspiration pointing down): its breaths are read "
                    "inverted; have the strap checked (hardware/wiring.md; engine.auto_polarity)"
                )

    def _line(self, text: str) -> None:
        self._write(("\r\033[K" if self._tty else "") + text + "\n")

    def _write(self, text: str) -> None:
        """Console output. A console that is gone (its terminal window closed, a pipe's reader ended) ends the
        output, never the session: recording, nudges and the store go on, and the session file says it all."""
        if self._console_gone:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):  # EIO / EPIPE, or a closed stream
            self._console_gone = True

    # -- running -----------------------------------------------------------------------------------

    def _rebuild(self, store: SessionStore) -> None:
        """Replay what a crashed run stored, so the engine resumes with its baselines and windows."""
        self._replaying = True
        try:
            for item in stored_stream(store, self.t0_s, self.config.straps.rate_hz):
                self._handle(self.engine.feed(item))
        finally:
            self._replaying = False
        for nudge in store.nudges():  # a failed one held nothing back from its own time on (stored_stream)
            self.nudge_ids[round(nudge.t_s - self.t0_s, 3)] = nudge.id
            if nudge.delivered is False:
                self._undelivered.add(nudge.id)

    async def run(self, stop: asyncio.Event) -> SessionSummary:
        sources = {role: getattr(self.config.straps, role) for role in ROLES}
        adapter = (
            contextlib.nullcontext(self.ble_options)
            if self.ble_options is not None
            else ble_adapter(self.config.straps.ble)
        )
        # Which session file, first: a run refused because its session is being recorded (or its
        # folder is a file) must not touch the radio, where it would disturb the run it defers to.
        choice = session_path(self.config)
        path, resumed = choice.path, choice.resumed
        if resumed:  # a continued session records at its own rate: its links and LSL outlets are made with it
            self._adopt_stored_rate(path)
        # Adapter, sources and the Bluetooth stack are checked before the session file exists: a
        # typo must neither leave an empty session behind nor block a retry within the same second.
        async with adapter as options:
            rate_hz = self.config.straps.rate_hz  # the session's rate: a strap at another is set to it
            self.links = await open_sources(sources, self, options, rate_hz, self.clock, session_rate_hz=rate_hz)
            try:
                if choice.note:
                    self._line(f"new session: {choice.note}")
                if self.config.outputs.lsl:
                    self.lsl = self._open_lsl(path.stem)
            except BaseException:
                await close_links(list(self.links.values()), [])
                raise
            try:
                return await self._run_session(stop, options, path, resumed)
            finally:
                if self.lsl is not None:
                    self.lsl.close()

    def _open_lsl(self, session_id: str) -> LslOutlets:
        strap_ids = {r: getattr(self.config.straps, r) for r in ROLES}
        try:
            return LslOutlets(
                session_id, self.config.straps.rate_hz, strap_ids, self.config.outputs.lsl_scope, self.clock
            )
        except (ImportError, OSError, RuntimeError) as exc:  # pylsl without its liblsl raises RuntimeError
            lines = str(exc).strip().splitlines()
            raise InputError(
                f"cannot open LSL outlets ({lines[0] if lines else type(exc).__name__}); "
                "install liblsl or use --no-lsl (outputs.lsl = false)"
            ) from None

    async def _run_session(self, stop: asyncio.Event, options: BleOptions, path: Path, resumed: bool) -> SessionSummary:
        lock = SessionLock(path)
        # The folders create() makes, outermost first: taken away again with a session that holds nothing (an input
        # review: a run whose strap search failed left a new, empty sessions folder behind).
        self._made_dirs = [] if resumed else [d for d in (path.parent, *path.parent.parents) if not d.exists()][::-1]
        try:
            store = SessionStore.open(path) if resumed else SessionStore.create(path, self.config.as_dict())
            try:
                lock.acquire()  # after create(): it makes the directory and claims a new file
            except BaseException:
                store.close()
                raise
        except Exception as exc:
            await close_links(list(self.links.values()), [])
            raise InputError(f"cannot use session file {path}: {str(exc).removeprefix(f'{path}: ')}") from None
        try:
            return await self._record(stop, options, store, path, resumed)
        except AdapterGone as exc:
            # Said once the session is saved, or removed when it held nothing (a review: 'kept' was said of one
            # just removed).
            kept = f"the session is saved: `breathsync run --name {shlex.quote(path.stem)}` continues it"
            raise LinkError(
                f"{exc}; {kept if path.exists() else 'nothing had been recorded: no session kept'}"
            ) from None
        finally:
            lock.release()

    async def _record(
        self, stop: asyncio.Event, options: BleOptions, store: SessionStore, path: Path, resumed: bool
    ) -> SessionSummary:
        self.store = store
        summary = SessionSummary(path, resumed)
        tasks: list[asyncio.Task[None]] = []
        failed = False
        failure: StoreError | None = None  # a full disk ended the session
        try:
            self._start_session(store, path, resumed)
            await self._connect_and_run(stop, options, store, tasks)
        except BaseException as exc:
            failed = True
            # A full disk: the session stays open (not closed) for the next run to continue. An adapter gone (the
            # virtual straps' process ended, most often at its scripted end) closes it like Ctrl-C: left open, the
            # next run resumed it and appended another dyad's recording to it (a data review). `--name` continues it.
            failure = exc if isinstance(exc, StoreError) else None
            raise
        finally:
            await close_links(list(self.links.values()), tasks, DAEMON_CLOSE_WAIT_S)
            await self._drain_nudges()
            known_empty = False
            try:
                summary.samples = {role: len(store.samples(role).counters) for role in ROLES}
                # As the report counts it, to the last sample stored (a soak review: 24.9 min said here, 23:48 in
                # the report, after a minute of retrying a strap that never came back).
                ends = [t for t in (store.last_sample_time(role) for role in ROLES) if t is not None]
                if ends and self._zero_s is not None:
                    summary.duration_s = max(ends) + 1.0 / self.config.straps.rate_hz - self._zero_s
                known_empty = not any(summary.samples.values())
                summary.nudges = len(store.nudges())
                summary.nudges_confirmed = sum(1 for e in store.link_events() if e[2] == "nudge-confirmed")
                if failure is None:  # a session cut short by a full disk stays open: the next run resumes it
                    store.set_meta("closed", "1")
                store.close()
            except StoreError:
                # The session could not be saved (a full disk): what was committed stays readable and
                # resumable. Report the first failure, not this echo of it.
                store.abandon()
                if not failed:
                    raise
            finally:
                if not resumed and known_empty:
                    # Ended before either strap sent anything: an empty file would only be in the way
                    # (and a later run would resume it).
                    remove_session_files(path)
                    for directory in reversed(self._made_dirs):
                        with contextlib.suppress(OSError):  # not empty (someone else's files), or gone: left
                            directory.rmdir()
                    summary.kept = False
                    if isinstance(failure, SaveFailed):  # a full disk from the start
                        raise StoreError(f"{failure.failure}; nothing had been saved: no session kept")
        return summary

    def _adopt_stored_rate(self, path: Path) -> None:
        """The rate the session at ``path`` recorded at, for this run's straps and outlets, made next
        (``_keep_stored_settings`` says so once the session is open; a file that cannot be read here is refused
        there)."""
        try:
            with SessionStore.open(path, read_only=True) as store:
                rate_hz = session_rate_hz(store, self.config.straps.rate_hz)
        except (StoreError, InputError):
            return
        self.config = dataclasses.replace(self.config, straps=dataclasses.replace(self.config.straps, rate_hz=rate_hz))

    def _keep_stored_settings(self, store: SessionStore, path: Path) -> None:
        """A continued session runs on with the engine and policy settings it started with (those it stores, which
        `replay SESSION` and the exports name): an input review found a resumed run using another --config's while
        the session said it ran with its own. Today's differences are named; they apply to a new session."""
        stored, _older = stored_config(store.config().get("engine"), str(path))  # damaged: refused here, not later
        changed: list[str] = []
        if stored is not None and stored != self.config.engine:
            now, then = dataclasses.asdict(self.config.engine), dataclasses.asdict(stored)
            changed = [f"{table}.{key}" for table in then for key in then[table] if then[table][key] != now[table][key]]
            self.config = dataclasses.replace(self.config, engine=stored)
        # And its rate, taken before its links and outlets were made (``_adopt_stored_rate``): set to today's, one
        # session held two (a review: its replay and exports timed the first part at the second's rate).
        if self.config.straps.rate_hz != self._given_rate_hz:
            changed.append("straps.rate_hz")
        if not changed:
            return
        self._line(
            f"continuing with the settings the session started with (the given ones differ in {', '.join(changed)};"
            " they apply to a new session)"
        )

    def _start_session(self, store: SessionStore, path: Path, resumed: bool) -> None:
        if resumed:
            t0 = store.meta_float("t0_unix_s")
            self.t0_s = self.clock() if t0 is None else t0
            self._keep_stored_settings(store, path)
            # The session keeps the baseline it started with (a calibration file, or none: learned).
            given = self.calibration
            self.calibration = stored_calibration(store)
            if given is not None and given != self.calibration:
                self._line("--therapist-baseline not used: a continued session keeps the baseline it started with")
            self.engine = EntrainmentEngine(self.config.engine, self.therapist_baseline)
            self._rebuild(store)
            self._zero_s = store.first_sample_time()
            # A session continued with --name after a clean end (closed) or resumed after a crash. Either way it is
            # being recorded again: not closed until this run ends it (a crash now is one to resume).
            ended = store.meta("closed") == "1"
            store.set_meta("closed", "0")
            why = "continued after the run before had ended it" if ended else "the run before ended without closing it"
            # The time between the two runs is otherwise unexplained: two 'connected' in a row.
            for role in ROLES:
                if store.last_sample_time(role) is not None:  # a strap the session never had was not lost
                    store.add_link_event(self.clock(), role, "resumed", why)
            self._line(f"resuming session {path}")
        else:
            self.t0_s = self.clock()
            store.set_meta("t0_unix_s", repr(self.t0_s))
            if self.calibration is not None:
                store_baseline(store, self.calibration)
            self._line(f"new session {path}")
        cal = self.calibration
        client_known = resumed and self.engine.baselines["client"] is not None
        # Said before the straps are found: the period starts once both deliver breathing, not now.
        over = f"over the first {self.config.engine.engine.baseline_s:.0f} s of breathing from both straps"
        if cal is None and client_known:
            self._line("both baselines learned earlier in the session")
        elif cal is None:
            self._line(f"learning both baselines {over} (from quiet breaths: longer if you talk, up to 3 min more)")
        else:
            base = cal.baseline
            made = f" ({', '.join(x for x in (cal.source, cal.created) if x)})" if cal.source or cal.created else ""
            # Nothing is judged until the client's is known too: said here, not only on the status line.
            client = (
                "the client's learned earlier in the session"
                if client_known
                else f"learning the client's {over} (longer while the client talks, up to 3 min more)"
            )
            self._line(
                f"therapist baseline {base.rate_bpm:.1f}/min (SD {base.rate_sd_bpm:.1f}) from calibration{made};"
                f" {client}"
            )

    async def _connect_and_run(
        self, stop: asyncio.Event, options: BleOptions, store: SessionStore, tasks: list[asyncio.Task[None]]
    ) -> None:
        """Find the straps not given by source, start every link (``tasks`` gets their tasks) and run."""
        auto = [role for role in ROLES if role not in self.links]  # each found as the strap that reports its role
        if auto:
            self._line(looking_for(auto))
            taken = [link.address for link in self.links.values()]  # never the strap another role names
            found = await unless_stopped(find_by_roles(auto, options, timeout_s=30.0, taken=taken), stop)
            if found is None:
                return  # Ctrl-C while searching
            for role, strap in found.items():
                if strap.name:
                    self._strap_names[role] = strap.name
                source = f"ble:{strap.address}"
                rate_hz = self.config.straps.rate_hz
                self.links[role] = open_link(source, role, self, options, rate_hz, self.clock, session_rate_hz=rate_hz)
        for role in ROLES:
            link = self.links[role]
            last = store.last_counter(role)
            stream = link.counters
            if last is not None and stream is not None:
                # A strap that rebooted earlier in the session counts from 0 again: without its offset the
                # stored counters read as a count it never reached, the first TIME_SYNC as a second reboot,
                # and its whole ring was fetched again under new counters (stored twice).
                # The last sample's time: a strap that rebooted while no host was there continues after the time
                # it was away; joined to the last stored counter, its new counters would hide the gap.
                offset = store.meta_int(f"counter_offset.{role}") or 0
                stream.resume_after(last, offset, store.last_sample_time(role), store.missing_ranges(role))
        self.links = {role: self.links[role] for role in ROLES}  # role order, however they were found
        tasks.extend(asyncio.create_task(link.run(), name=f"link-{role}") for role, link in self.links.items())
        await self._tick(stop, tasks)

    async def _drain_nudges(self) -> None:
        """Nudges still being sent when the links closed end now, before the store they log to closes."""
        for task in self._nudge_tasks:
            task.cancel()
        await asyncio.gather(*self._nudge_tasks, return_exceptions=True)
        self._nudge_tasks.clear()

    @property
    def therapist_baseline(self) -> Baseline | None:
        """The pre-session calibration's baseline, or None when both are learned in the session."""
        return None if self.calibration is None else self.calibration.baseline

    async def _tick(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        await self._tick_until_done(stop, tasks)
        if self.store_failure is not None:  # also when Ctrl-C or the sources' end came right after it
            raise self.store_failure

    async def _tick_until_done(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        interval = self.config.outputs.status_interval_s
        while not stop.is_set():
            if self.store_failure is not None:
                raise self.store_failure
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if all(task.done() for task in tasks):
                return  # every source ended (replayed sessions)
            self._handle(self.engine.advance(self.session_s(self.clock())))
            assert self.store is not None
            self.store.commit()
            now = self.clock()
            self._say_mute_over(now)
            if status_due(now, self._last_status, self._zero_s, interval):
                self._last_status = now
                text = self.status_line()
                if self._tty:
                    self._write("\r\033[K" + text)
                else:
                    self._line(text)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
