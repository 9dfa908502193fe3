"""A recording given to a command as what a strap's sensor would have seen: the same reading for every command.

``replay``, ``detect``, ``calibrate --recording`` and ``sim --*-input`` all read a recording the same way:
rows left out of a timed file come back where its time column says they were, missing samples (empty cells,
any NaN spelling) are bridged for the strap simulation, and stretches of at least SHORTEST_DROPOUT_S are
drop-outs: no breath found there is real. Each command prints the same notes on stderr. The sampling rate is
``--rate``, or the one the file states in its own header (an OpenSignals export): ``input_rate``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..adc import FIT_S, HEADROOM_SPANS, StrapSignal, check_signal_magnitude, simulate_adc
from ..engine.replay import SHORTEST_DROPOUT_S, missing_as_dropouts, missing_stretches
from ..errors import InputError
from ..recording import (
    INPUT_RATE_RANGE_HZ,
    FloatArray,
    Recording,
    check_input_rate,
    read_recording,
    rows_on_the_time_grid,
    stated_sampling_rate,
)
from ..strap_sim import MIN_DURATION_S

Interval = tuple[float, float]


def input_rate(path: str, rate_hz: float | None, option: str = "--rate") -> float:
    """``path``'s sampling rate: ``rate_hz`` as given on the command line (by ``option``), else the rate the file
    states in its header (``read_recording`` checks a given one against it). A one-line InputError when neither is
    there, or the rate is not one breathsync reads."""
    if rate_hz is not None:
        try:
            return check_input_rate(rate_hz)
        except InputError as exc:
            raise InputError(str(exc).replace("--rate", option, 1)) from None
    stated = stated_sampling_rate(path)
    if stated is None:
        stating = Path(path).is_file()
        why = "the file does not state its sampling rate" if stating else "a pipe's header is not read for it"
        raise InputError(f"{path}: give {option} HZ ({why})")
    try:
        return check_input_rate(stated)
    except InputError:
        lo, hi = INPUT_RATE_RANGE_HZ
        raise InputError(
            f"{path}: its header says it was recorded at {stated:g} Hz; breathsync reads {lo:g}-{hi:g} Hz"
        ) from None


@dataclass(frozen=True)
class StrapInput:
    """A recording's signal with every missing sample bridged, and where it was missing for long."""

    signal: FloatArray
    dropouts_s: tuple[Interval, ...]  # seconds from the start, widened to the strap's whole sample blocks
    strap: StrapSignal  # what the simulated strap's converter makes of ``signal`` (computed once: replay, detect)


def read_strap_input(
    path: str,
    column: str,
    sampling_rate: float,
    whose: str,
    command: str,
    strap_rate_hz: int = 25,
    dropouts: bool = True,
) -> StrapInput:
    """``path``'s ``column`` at ``sampling_rate``; ``whose`` ("the therapist's") and ``command`` word the notes.

    ``dropouts`` False (a virtual strap playing the recording live): every missing stretch is only bridged.
    """
    recording = read_recording(path, column, missing_ok=True, sampling_rate=sampling_rate)
    signal = _on_time_grid(recording, sampling_rate, path, whose, command)
    if len(signal) < MIN_DURATION_S * sampling_rate:
        raise InputError(
            f"{path}: recording too short ({len(signal)} samples, {len(signal) / sampling_rate:.3g} s at "
            f"{sampling_rate:g} Hz; at least {MIN_DURATION_S:g} s needed)"
        )
    try:
        filled, gaps = missing_as_dropouts(signal, sampling_rate, strap_rate_hz)
        check_signal_magnitude(filled)  # here, where the file can be named (the strap model would say it later)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not dropouts:
        gaps = ()
    _note_missing(signal, sampling_rate, len(gaps), whose, command, bridge_only=not dropouts)
    strap = simulate_adc(filled, sampling_rate, strap_rate_hz)
    _note_rails(strap, whose, command)
    return StrapInput(filled, gaps, strap)


RAIL_NOTE_S = 5.0  # this long at the simulated strap's rails is said (a movement burst of a second or two is not)


def _note_rails(strap: StrapSignal, whose: str, command: str) -> None:
    """Say how long the simulated strap sits at a rail of its converter: a level that drifts or steps by more than
    the front end's headroom (``adc.HEADROOM_SPANS`` breath ranges of the first 30 s) loses every breath from then
    on, as a real strap's would, and nothing else would tell (an outside review: half a recording without a breath,
    no note)."""
    counts, strap_rate_hz = strap.counts_u16, strap.rate_hz
    railed = (counts == 0) | (counts == 0xFFFF)
    seconds = np.count_nonzero(railed) / strap_rate_hz
    if seconds < RAIL_NOTE_S:
        return
    first_s = np.flatnonzero(railed)[0] / strap_rate_hz
    print(
        f"breathsync {command}: note: {whose} signal is beyond the simulated strap's range for {seconds:.0f} s "
        f"({100 * seconds * strap_rate_hz / len(counts):.0f} %), from {first_s:.0f} s: its level moved more than "
        f"{HEADROOM_SPANS:g} breath ranges of its first {FIT_S:.0f} s away (drift, a step), and breaths there are "
        "lost; high-pass or detrend it first",
        file=sys.stderr,
    )


def _on_time_grid(recording: Recording, sampling_rate: float, path: str, whose: str, command: str) -> FloatArray:
    """Rows are samples at --rate; where the file's time column shows rows left out, they come back as missing."""
    grid = rows_on_the_time_grid(recording, sampling_rate, path)
    if grid is not None and grid.unit is None:
        step = grid.step
        said = f" (its step, {step:.6g}, is {1 / step:.6g} Hz in s, {1000 / step:.6g} Hz in ms)" if step > 0 else ""
        print(
            f"breathsync {command}: note: {whose} column {recording.time_column!r} does not step by 1/--rate "
            f"(in s or ms){said}: rows are taken as consecutive samples",
            file=sys.stderr,
        )
    if grid is None or grid.rows_added == 0:
        return recording.values
    print(
        f"breathsync {command}: note: {whose} {recording.time_column!r} column skips {grid.rows_added} samples "
        f"in {grid.jumps} place(s): they are replayed as missing",
        file=sys.stderr,
    )
    return grid.values


def _note_missing(
    signal: FloatArray, sampling_rate: float, dropouts: int, whose: str, command: str, bridge_only: bool
) -> None:
    """Say how much of a recording was missing and what became of it."""
    missing = np.isnan(signal)
    if missing.any():
        runs = len(missing_stretches(missing)[0])
        seconds = np.count_nonzero(missing) / sampling_rate
        if bridge_only:
            what = "bridged with a straight line (a virtual strap plays on)"
        else:
            bridged = f", {runs - dropouts} shorter than {SHORTEST_DROPOUT_S:g} s bridged" if runs > dropouts else ""
            what = f"{dropouts} replayed as drop-outs (no data from that strap){bridged}"
        print(
            f"breathsync {command}: note: {whose} recording has {runs} stretch(es) of missing samples "
            f"({seconds:.1f} s in all): {what}",
            file=sys.stderr,
        )
