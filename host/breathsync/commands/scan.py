"""breathsync scan: list the straps in range with role, firmware, battery and signal strength."""

from __future__ import annotations

import argparse
import asyncio

from ..link.sources import ble_adapter, scan_straps
from .arguments import positive_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ble", default="system", metavar="ADAPTER", help="system (default) or bumble:<transport>")
    parser.add_argument(
        "--timeout", type=positive_float, default=5.0, metavar="S", help="scan time in seconds (default 5)"
    )


async def scan_and_print(adapter: str, timeout_s: float) -> int:
    async with ble_adapter(adapter) as options:
        straps = await scan_straps(options, timeout_s)
    if not straps:
        print("no straps found (are they charged and advertising?)")
        return 1
    print(f"{'name':<22} {'address':<18} {'role':<10} {'firmware':<9} {'battery':>7} {'rate':>5} {'RSSI':>5}")
    for s in straps:
        battery = "?" if s.battery_pct is None else f"{s.battery_pct}%"
        rate = "?" if s.sample_rate_hz is None else f"{s.sample_rate_hz}Hz"
        rssi = "?" if s.rssi_dbm is None else str(s.rssi_dbm)
        print(
            f"{s.name:<22} {s.address:<18} {s.role or '?':<10} {s.firmware or '?':<9} {battery:>7} {rate:>5} {rssi:>5}"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(scan_and_print(args.ble, args.timeout))
