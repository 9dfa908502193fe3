"""firmware/drivers against host/breathsync/mp/doubles/machine.py, under CPython and the MicroPython unix port.

The checks live in tests/mp/hw_drivers.py so both interpreters run the same code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import DOUBLES, RunMicroPython

REPO = Path(__file__).resolve().parents[1]
MP_DIR = REPO / "tests" / "mp"
for _p in (DOUBLES, REPO / "firmware", MP_DIR):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import hw_drivers  # noqa: E402
import machine  # noqa: E402

CHECKS: list[tuple[str, Callable[[], None]]] = hw_drivers.CHECKS


def test_machine_is_the_double() -> None:
    assert hasattr(machine, "sim"), "host/breathsync/mp/doubles/machine.py must shadow any other machine module"


@pytest.mark.parametrize(("name", "check"), CHECKS, ids=[name for name, _ in CHECKS])
def test_driver_check_cpython(name: str, check: Callable[[], None]) -> None:
    check()


@pytest.mark.micropython
def test_driver_checks_micropython(run_micropython: RunMicroPython) -> None:
    proc = run_micropython(MP_DIR / "hw_drivers.py", path=(DOUBLES, REPO / "firmware"))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.splitlines() == [f"ok {name}" for name, _ in CHECKS]


def test_double_rejects_what_the_device_rejects() -> None:
    machine.sim.reset()
    with pytest.raises(ValueError):
        machine.PWM(machine.Pin(4)).duty_u16(70000)
    with pytest.raises(ValueError):
        machine.Timer(7)
    with pytest.raises(ValueError):
        machine.freq(123)
    with pytest.raises(OSError) as e:
        machine.I2C(0).readfrom_mem(0x77, 0, 1)
    assert e.value.args[0] == 19  # ENODEV, like the ESP32 port on a NACK
    with pytest.raises(machine.DeviceReset):
        machine.reset()
    assert machine.sim.resets[-1][1] == "machine.reset"
