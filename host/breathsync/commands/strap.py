"""breathsync strap: show one strap's settings, or give it a role, a name or a sampling rate, or make it buzz.

breathsync strap breathsync --identify            # which strap is this? (a new strap's name is "breathsync")
breathsync strap AA:BB:CC:DD:EE:FF --role therapist --name strap-T
"""

from __future__ import annotations

import argparse
import asyncio

from ..link.sources import ble_adapter
from ..link.strap_settings import RATE_CHOICES_HZ, ROLE_CHOICES, SettingsRequest, StrapSettings, apply_settings
from .arguments import positive_float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "strap",
        metavar="STRAP",
        help="the strap's address or advertised name (`breathsync scan` lists them; 'ble:' in front is allowed)",
    )
    parser.add_argument("--role", choices=ROLE_CHOICES, help="the person who wears it (kept by the strap)")
    parser.add_argument("--name", metavar="NAME", help="the name it advertises: 1-16 printable ASCII characters")
    parser.add_argument(
        "--rate", type=int, choices=RATE_CHOICES_HZ, metavar="HZ", help="sampling rate: 25 (default) or 50 Hz"
    )
    parser.add_argument("--identify", action="store_true", help="make it buzz three times (which strap is it?)")
    parser.add_argument("--ble", default="system", metavar="ADAPTER", help="system (default) or bumble:<transport>")
    parser.add_argument(
        "--timeout", type=positive_float, default=5.0, metavar="S", help="how long to look for it (default 5 s)"
    )


def describe(settings: StrapSettings) -> str:
    battery = "?" if settings.battery_pct is None else f"{settings.battery_pct}%"
    return f"role {settings.role}, {settings.sample_rate_hz} Hz, firmware {settings.firmware}, battery {battery}" + (
        ", streaming" if settings.streaming else ""
    )


def changes(before: StrapSettings, after: StrapSettings) -> list[str]:
    lines = []
    for what, old, new in (
        ("role", before.role, after.role),
        ("name", before.name, after.name),
        ("rate", f"{before.sample_rate_hz} Hz", f"{after.sample_rate_hz} Hz"),
    ):
        if old != new:
            lines.append(f"  {what}: {old} -> {new}")
    return lines


async def show_or_change(target: str, request: SettingsRequest, adapter: str, timeout_s: float) -> int:
    async with ble_adapter(adapter) as options:
        before, after = await apply_settings(target, request, options, timeout_s)
    print(f"{after.name or '?'} at {after.address}: {describe(after)}")
    for line in changes(before, after):
        print(line)
    if request.identify:
        print("  it buzzed three times")
    if before.name != after.name:
        print(f"  it advertises as {after.name!r} from now on")
    return 0


def run(args: argparse.Namespace) -> int:
    target = args.strap[len("ble:") :] if args.strap.startswith("ble:") else args.strap
    request = SettingsRequest(role=args.role, name=args.name, rate_hz=args.rate, identify=args.identify)
    return asyncio.run(show_or_change(target, request, args.ble, args.timeout))
