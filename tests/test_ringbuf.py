"""firmware/core/ringbuf.py: model-checked under CPython and the MicroPython unix port."""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DOUBLES, RunMicroPython

REPO = Path(__file__).resolve().parents[1]
MP_DIR = REPO / "tests" / "mp"
for _p in (REPO / "firmware", MP_DIR, DOUBLES):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import hw_ringbuf  # noqa: E402
from core.ringbuf import MAX_CAPACITY, EventRing, SampleRing  # noqa: E402

SEEDS = list(range(1, 13))


def read_from(ring, start, out, max_count):
    """(n, first): ``ring.read_from`` and the ``read_first`` it sets."""
    n = ring.read_from(start, out, max_count)
    return n, ring.read_first


def test_capacity_bounds() -> None:
    for bad in (0, -1, MAX_CAPACITY + 1):
        with pytest.raises(ValueError):
            SampleRing(bad)
    with pytest.raises(ValueError):
        EventRing(0, 5)
    assert SampleRing(MAX_CAPACITY).capacity == MAX_CAPACITY


def test_wraparound_and_backfill_exact() -> None:
    ring = SampleRing(1000)
    for i in range(2500):
        ring.push(i % 65536)
    out = array("H", range(1000))
    n, first = read_from(ring, 1700, out, 1000)
    assert (n, first) == (800, 1700)
    assert list(out[:n]) == list(range(1700, 2500))
    # Older than the buffer: starts at the oldest held, the gap is visible to the host.
    n, first = read_from(ring, 0, out, 10)
    assert (n, first) == (10, 1500) and list(out[:10]) == list(range(1500, 1510))
    assert read_from(ring, 2500, out, 10) == (0, 2500)  # nothing newer
    assert read_from(ring, 2600, out, 10) == (0, 2500)  # in the future


def test_overflow_counts_only_undelivered_samples() -> None:
    ring = SampleRing(10)
    for i in range(25):
        ring.push(i)
    assert ring.overflow == 15 and ring.pending() == 10 and ring.cursor() == 15
    ring.commit(10)  # host got everything held
    for i in range(25, 35):
        ring.push(i)  # overwrites delivered samples only
    assert ring.overflow == 15 and ring.pending() == 10
    # The host reconnects and asks from 20: those are gone (not counted again); lands on 25.
    assert ring.rewind(20) == 25 and ring.pending() == 10
    out = array("H", range(10))
    assert ring.read_pending(out, 10) == 10 and list(out) == list(range(25, 35))
    assert ring.rewind(40) == 35 and ring.pending() == 0


def test_counter_crosses_2_30_and_2_32() -> None:
    for start in ((1 << 30) - 5, (1 << 32) - 5):
        ring = SampleRing(100)
        ring.clear(start)
        for i in range(10):
            ring.push(i)
            # Hot-path state stays small: two u16 halves, never a 2**30+ int.
            assert 0 <= ring.head_hi < 65536 and 0 <= ring.head_lo < 65536
        head = (start + 10) & 0xFFFFFFFF
        assert ring.head() == head
        out = array("H", range(10))
        assert read_from(ring, start, out, 10) == (10, start)
        assert list(out) == list(range(10))
        assert read_from(ring, (start + 3) & 0xFFFFFFFF, out, 10) == (7, (start + 3) & 0xFFFFFFFF)


def test_event_ring_copies_detector_records() -> None:
    from core.detector import EVENT_FIELDS

    ring = EventRing(4, EVENT_FIELDS)
    events = array("i", range(EVENT_FIELDS * 3))
    for k in range(6):
        ring.push(events, (k % 3) * EVENT_FIELDS)
    assert ring.head == 6 and ring.overflow == 2 and ring.oldest() == 2
    out = array("i", range(EVENT_FIELDS * 8))
    n, first = read_from(ring, 0, out, 8)
    assert (n, first) == (4, 2)
    assert list(out[:EVENT_FIELDS]) == list(events[2 * EVENT_FIELDS : 3 * EVENT_FIELDS])


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 200)),
        st.tuples(st.just("commit"), st.integers(-3, 300)),
        st.tuples(st.just("rewind"), st.integers(-700, 20)),
        st.tuples(st.just("read"), st.integers(-700, 20), st.integers(0, 400)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(cap=st.integers(1, 300), base=st.sampled_from([0, (1 << 32) - 150, (1 << 30) - 40]), ops=ops)
def test_matches_reference_model(cap: int, base: int, ops: list[tuple[object, ...]]) -> None:
    ring = SampleRing(cap)
    ring.clear(base)
    model = hw_ringbuf.Model(cap, base)
    out = array("H", range(300))
    value = 0
    for op in ops:
        if op[0] == "push":
            for _ in range(int(op[1])):  # type: ignore[call-overload]
                value = (value * 75 + 74) % 65537 % 65536
                ring.push(value)
                model.push(value)
        elif op[0] == "commit":
            ring.commit(op[1])
            model.commit(int(op[1]))  # type: ignore[call-overload]
        elif op[0] == "rewind":
            c = model.head() + int(op[1])  # type: ignore[call-overload]
            assert ring.rewind(c & 0xFFFFFFFF) == model.rewind(c) & 0xFFFFFFFF
        else:
            c = model.head() + int(op[1])  # type: ignore[call-overload]
            n, first = read_from(ring, c & 0xFFFFFFFF, out, op[2])
            want, wfirst = model.read(c, int(op[2]), len(out))  # type: ignore[call-overload]
            assert (n, first) == (len(want), wfirst & 0xFFFFFFFF)
            assert list(out[:n]) == want
        assert ring.overflow == model.overflow
        assert ring.pending() == model.head() - model.d
        assert ring.available() == model.head() - model.oldest()


def test_seeded_fuzz_cpython() -> None:
    for seed in SEEDS:
        assert " ok " in hw_ringbuf.fuzz(seed), seed
        assert " ok " in hw_ringbuf.fuzz_events(seed), seed


@pytest.mark.micropython
def test_same_results_under_micropython(run_micropython: RunMicroPython) -> None:
    proc = run_micropython(MP_DIR / "hw_ringbuf.py", *map(str, SEEDS), path=(REPO / "firmware", DOUBLES))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    want = []
    for seed in SEEDS:
        want += [hw_ringbuf.fuzz(seed), hw_ringbuf.fuzz_events(seed)]
    assert out.splitlines() == want  # bit-identical behaviour on both interpreters


@pytest.mark.micropython
@pytest.mark.parametrize(("arg", "heapsize"), [("alloc", None), ("alloc:7500", "64K")])
def test_zero_allocation_per_push(run_micropython: RunMicroPython, arg: str, heapsize: str | None) -> None:
    """heap_lock catches heap allocations; the mem_total delta also sees bytecode frames.

    7500 samples = 5 min at the default 25 Hz, which must fit a 64 KB heap; 15000 (50 Hz)
    runs at the default heap.
    """
    proc = run_micropython(MP_DIR / "hw_ringbuf.py", arg, path=(REPO / "firmware", DOUBLES), heapsize=heapsize)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.startswith("alloc delta=0 "), out
