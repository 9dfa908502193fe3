"""The package ships everything it needs: every subpackage, the bundled data, the MicroPython scripts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    host = REPO / "host"
    found = {".".join(p.parent.relative_to(host).parts) for p in (host / "breathsync").rglob("__init__.py")}
    assert found - {"breathsync.fwcore"} <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert "breathsync.fwcore" in listed


def test_wheel_contains_packages_data_and_firmware_core(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("breathsync-*.whl")
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
    ]:
        assert required in names, f"{required} not in the wheel"
