"""The package ships everything it needs: every subpackage, the bundled data, the MicroPython scripts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    host = REPO / "host"
    found = {".".join(p.parent.relative_to(host).parts) for p in (host / "breathsync").rglob("__init__.py")}
    assert found - {"breathsync.fwcore"} <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert "breathsync.fwcore" in listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("breathsync-*.whl")
    return built


def test_wheel_contains_packages_data_and_firmware(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in [
        "breathsync/cli.py",
        "breathsync/engine/engine.py",
        "breathsync/link/ble.py",
        "breathsync/sim/__init__.py",
        "breathsync/fwcore/detector.py",
        "breathsync/fwcore/detector_viper.py",
        "breathsync/data/bidmc_04_resp.csv.gz",
        "breathsync/data/PROVENANCE.md",
        "breathsync/mp/detector_runner.py",
        "breathsync/mp/doubles/machine.py",
        "breathsync/py.typed",
        "breathsync/firmware/main.py",
        "breathsync/firmware/config.py",
        "breathsync/firmware/strap/app.py",
        "breathsync/firmware/drivers/haptic.py",
        "breathsync/firmware/core/ringbuf.py",
    ]:
        assert required in names, f"{required} not in the wheel"


@pytest.mark.micropython
def test_virtual_straps_run_from_the_installed_wheel(wheel: Path, tmp_path: Path, micropython: str) -> None:
    """Installed from the wheel, not a checkout: `breathsync sim` boots the packaged firmware."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r}); import breathsync; "
        f"assert breathsync.__file__.startswith({str(site)!r}), breathsync.__file__; "
        "from breathsync.cli import main; sys.exit(main(['sim', '--synthetic', '--seconds', '2']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ready: therapist=") and "client:" in proc.stdout
