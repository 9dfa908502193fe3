"""`breathsync scan` and `breathsync stream` as separate processes, against virtual straps over HCI/TCP."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from strap_model import ModelStrap

from breathsync.link.bumble_backend import new_link
from breathsync.link.virtual_peripheral import HciServer


@pytest.fixture
def served_strap() -> Iterator[tuple[str, ModelStrap]]:
    """A model strap on a virtual link whose controller is served on 127.0.0.1 (another thread's loop)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        link = new_link()
        values = [int(v) for v in np.random.default_rng(9).integers(0, 65536, 25 * 600)]
        strap = await ModelStrap("strap-cli", values, speed=1.0).start(link)
        server = await HciServer.start(link, "tcp-server:127.0.0.1:0")
        holder.update(strap=strap, server=server, moniker=server.host_moniker)
        ready.set()
        while not holder.get("stop"):
            await asyncio.sleep(0.05)
        await server.close()
        await strap.close()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        yield f"bumble:{holder['moniker']}", holder["strap"]  # type: ignore[misc]
    finally:
        holder["stop"] = True
        thread.join(20)
        loop.close()


def breathsync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "breathsync", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_scan_lists_role_firmware_battery_rssi(served_strap: tuple[str, ModelStrap]) -> None:
    adapter, _ = served_strap
    proc = breathsync("scan", "--ble", adapter, "--timeout", "1.5")
    assert proc.returncode == 0, proc.stderr
    [line] = [row for row in proc.stdout.splitlines() if row.startswith("strap-cli")]
    fields = line.split()
    assert fields[2] == "client" and fields[4] == "90%" and fields[5] == "25Hz"


def test_stream_to_csv(served_strap: tuple[str, ModelStrap], tmp_path: Path) -> None:
    adapter, strap = served_strap
    out = tmp_path / "stream.csv"
    proc = breathsync("stream", "--ble", adapter, "--client", "ble:strap-cli", "--seconds", "4", "--csv", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "client" in proc.stdout and "link connected" in proc.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    samples = [r for r in rows if r["kind"] == "sample"]
    assert len(samples) >= 25 * 2  # at least 2 s of a 25 Hz strap
    counters = [int(r["counter"]) for r in samples]
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    assert all(int(r["value"]) == strap.values[int(r["counter"])] for r in samples)


def test_bad_adapter_and_source_are_one_line_errors() -> None:
    proc = breathsync("stream", "--ble", "carrier-pigeon", "--client", "ble:x", "--seconds", "1")
    assert proc.returncode == 2 and "unknown BLE adapter" in proc.stderr and "Traceback" not in proc.stderr
    proc = breathsync("stream", "--ble", "system", "--client", "smoke:signals", "--seconds", "1")
    assert proc.returncode == 2 and "unknown source kind" in proc.stderr and "Traceback" not in proc.stderr
