"""`breathsync strap`: one strap's settings read and changed over BLE, against the REAL firmware (MicroPython unix
port) behind a Bumble GATT server, the production bleak code on the host side."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from strap_model import ModelStrap

from breathsync.errors import InputError
from breathsync.link.ble import BleOptions
from breathsync.link.bumble_backend import BumbleBench, new_link
from breathsync.link.session import LinkError
from breathsync.link.strap_settings import SettingsRequest, apply_settings, find_strap
from breathsync.sim import SimError, StrapConfig, VirtualBench, VirtualStrap, synthetic_counts

RATE = 25
IDENTIFY_PCT = 60  # docs/protocol.md: 3 x 100 ms on / 100 ms off at 60 %


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=90))


def options_for(host: BumbleBench) -> BleOptions:
    return host.ble_options(BleOptions(connect_timeout_s=3.0, scan_timeout_s=3.0))


def straps(*roles: str) -> list[StrapConfig]:
    return [StrapConfig(synthetic_counts(120, 14 + i, RATE, seed=i), role=role) for i, role in enumerate(roles)]


@pytest.mark.micropython
def test_a_new_strap_becomes_the_therapists_keeps_it_after_a_power_cycle_and_buzzes(micropython: str) -> None:
    async def go() -> None:
        async with await VirtualBench.start(straps("client")) as vb, await BumbleBench.open(vb.link) as host:
            options = options_for(host)
            shown, same = await apply_settings("breathsync-client", SettingsRequest(), options)
            assert shown == same and (shown.role, shown.sample_rate_hz, shown.name) == (
                "client",
                25,
                "breathsync-client",
            )
            assert not vb["client"].pwm  # showing the settings changes nothing and plays nothing

            request = SettingsRequest(role="therapist", name="strap-T", rate_hz=50, identify=True)
            before, after = await apply_settings(shown.address, request, options)
            assert (before.role, before.name, before.sample_rate_hz) == ("client", "breathsync-client", 25)
            assert (after.role, after.name, after.sample_rate_hz) == ("therapist", "strap-T", 50)
            await vb["client"].wait_until(lambda: len([p for p in vb["client"].pwm if p.duty_u16 == 0]) >= 3, 5)
            on = [p for p in vb["client"].pwm if p.duty_u16 > 0]
            assert [p.duty_u16 for p in on] == [IDENTIFY_PCT * 65535 // 100] * 3
            await feeds_at_its_own_pace(vb["client"], samples_per_count=2)  # the wearer breathes no faster at 50 Hz

            await vb["client"].reboot()  # settings live in the strap's flash
            found = await find_strap("strap-T", options, 5.0)  # advertised under its new name
            assert found.address == shown.address
            kept, _ = await apply_settings("strap-T", SettingsRequest(), options)
            assert (kept.role, kept.name, kept.sample_rate_hz) == ("therapist", "strap-T", 50)
            await feeds_at_its_own_pace(vb["client"], samples_per_count=2)

    run(go)


def test_two_virtual_straps_with_one_radio_address_are_refused() -> None:
    # 'c2...' and '02...' are different MAC strings but one address once its top two bits are set (a review).
    configs = [
        replace(strap, mac=mac)
        for strap, mac in zip(straps("therapist", "client"), ["c20000000001", "020000000001"], strict=True)
    ]
    with pytest.raises(SimError, match="two virtual straps would share a radio address"):
        asyncio.run(VirtualBench.start(configs))


async def feeds_at_its_own_pace(strap: VirtualStrap, samples_per_count: int) -> None:
    """The virtual strap's sensor feed, made for 25 Hz, plays at its own pace at the strap's present rate."""
    first = await strap.info()
    await asyncio.sleep(2.0)
    then = await strap.info()
    samples, counts = then["samples"] - first["samples"], then["fed"] - first["fed"]
    assert samples >= 40 and abs(samples - samples_per_count * counts) <= 2, (samples, counts)


@pytest.mark.micropython
def test_two_straps_of_one_name_are_not_guessed_between_and_an_absent_one_is_named(micropython: str) -> None:
    async def go() -> None:
        new_straps = [  # every new strap is called "breathsync"
            replace(strap, name="breathsync", mac=f"C2000000000{i}")
            for i, strap in enumerate(straps("therapist", "client"))
        ]
        async with await VirtualBench.start(new_straps) as vb, await BumbleBench.open(vb.link) as host:
            options = options_for(host)
            with pytest.raises(InputError, match=r"2 straps are named 'breathsync' \(.*\): name one by its address"):
                await apply_settings("breathsync", SettingsRequest(role="therapist"), options)
            # Nothing was changed on either; by address each one is found.
            client, _ = await apply_settings("C2:00:00:00:00:01", SettingsRequest(), options)
            therapist, _ = await apply_settings("C2:00:00:00:00:00", SettingsRequest(), options)
            assert (client.role, therapist.role) == ("client", "therapist")
            # A second strap of the name that is first seen after the --timeout (here its radio was off) is waited
            # for all the same: cut at the deadline, the search took the first one without the check.
            late = asyncio.ensure_future(vb["therapist"].power_off(0.8))
            await asyncio.sleep(0.3)  # it has stopped advertising
            with pytest.raises(InputError, match=r"2 straps are named 'breathsync'"):
                await find_strap("breathsync", options, 0.3)
            await late
            with pytest.raises(LinkError, match=r"no strap named 'strap-X' in range \(straps seen: breathsync \("):
                await find_strap("strap-X", options, 1.0)
            with pytest.raises(LinkError, match=r"no strap at '00:11:22:33:44:55' in range"):
                await find_strap("00:11:22:33:44:55", options, 1.0)
            # Nor is a strap given the name another one advertises, by address either: it is refused before anything
            # changes (this one's role stays as it was).
            _, renamed = await apply_settings(client.address, SettingsRequest(name="strap-C"), options)
            assert renamed.name == "strap-C"
            with pytest.raises(
                InputError, match=r"--name: the strap at C2:00:00:00:00:01 already advertises 'strap-C'"
            ):
                await apply_settings(therapist.address, SettingsRequest(name="strap-C", role="client"), options)
            unchanged, _ = await apply_settings(therapist.address, SettingsRequest(), options)
            assert (unchanged.name, unchanged.role) == ("breathsync", "therapist")

    run(go)


@pytest.mark.micropython
def test_a_setting_whose_answer_never_comes_may_have_been_applied_and_the_message_says_how_to_look(
    micropython: str,
) -> None:
    async def go() -> None:
        async with await VirtualBench.start(straps("client")) as vb, await BumbleBench.open(vb.link) as host:
            options = options_for(host)
            shown, _ = await apply_settings("breathsync-client", SettingsRequest(), options)
            vb["client"].stall_notifications()  # connected, but nothing comes back from the strap
            with pytest.raises(LinkError) as failed:
                await apply_settings(shown.address, SettingsRequest(role="therapist"), options)
            assert str(failed.value) == (
                f"strap breathsync-client at {shown.address}: SetRole got no answer (the link was lost, or the strap"
                f" did not answer within 3 s): it may have been applied; `breathsync strap {shown.address}` shows its"
                " settings"
            )
            vb["client"].resume_notifications()
            now, _ = await apply_settings(shown.address, SettingsRequest(), options)
            assert now.role == "therapist"  # it had been applied

    run(go)


def test_identify_on_firmware_that_does_not_say_its_length_waits_for_the_whole_pattern() -> None:
    # Firmware before 0.1.3 answers IDENTIFY with 0 (the model strap does too): the host stays connected for the
    # 500 ms pattern, as a strap ends a pattern when its link goes.
    async def go() -> None:
        link = new_link()
        strap = await ModelStrap("old-strap", [32768] * 2500).start(link)
        try:
            async with await BumbleBench.open(link) as bench:
                await apply_settings("old-strap", SettingsRequest(identify=True), options_for(bench))
                returned_s = time.monotonic()
        finally:
            await strap.close()
        [identify_s] = [t for t, opcode in strap.controls if opcode == "IDENTIFY"]
        assert returned_s - identify_s >= 0.5  # a lower bound: the pattern's length, not a speed figure

    run(go)


def test_bad_settings_are_refused_before_any_radio_is_used() -> None:
    for request, message in (
        ({"name": "héllo"}, "printable ASCII"),
        ({"name": ""}, "1..16 characters"),
        ({"name": "a" * 17}, "1..16 characters"),
        ({"name": "strap-C "}, "no spaces at its start or end, got 'strap-C '"),
        ({"name": "  "}, "no spaces at its start or end"),
        ({"role": "boss"}, "role must be one of therapist, client, unassigned"),
        ({"rate_hz": 100}, "rate must be one of 25, 50 Hz"),
    ):
        with pytest.raises(InputError, match=message):
            SettingsRequest(**request)  # type: ignore[arg-type]


def test_the_command_refuses_bad_values_in_one_line() -> None:
    for argv, message in (
        (["--name", "x" * 17], "breathsync strap: --name: name must be 1..16 characters"),
        (["--rate", "100"], "argument --rate: invalid choice: 100"),
        (["--role", "boss"], "argument --role: invalid choice: 'boss'"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "breathsync",
                "strap",
                "breathsync",
                *argv,
                "--ble",
                "bumble:tcp-client:127.0.0.1:1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2 and "Traceback" not in proc.stderr  # usage + error
