"""Copy a built firmware tree to a MicroPython board with mpremote.

    python tools/deploy_firmware.py --port /dev/ttyUSB0 --build build/firmware-xtensawin [--reset soft|hard|none]

``--build`` is the output of ``tools/build_firmware.py`` (``make firmware``): .mpy modules, with
main.py (and boot.py) as source. Everything runs in one mpremote session, chained with ``+``:

1. ``connect PORT resume``: attach without the soft reset mpremote does by default (the firmware
   keeps running until mpremote's Ctrl-C interrupts it; on the unix port a soft reset would exit);
2. ``exec``: create the directories (existing ones are fine), and remove modules the build no longer has from
   them (and a module's source where its .mpy is deployed); the top folder's other files are kept;
3. ``fs cp FILE :FILE`` for every file;
4. ``soft-reset`` (default: main.py starts) or ``reset`` (hard), unless ``--reset none``.

A strap in wired mode ignores Ctrl-C (frames may contain 0x03): press RESET, then hold BOOT for two
seconds (docs/firmware.md), then deploy. ``--dry-run`` prints the mpremote command instead of running it.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

RESETS = {"soft": ["soft-reset"], "hard": ["reset"], "none": []}


def mpremote() -> str:
    beside = Path(sys.executable).parent / "mpremote"
    found = str(beside) if beside.exists() else shutil.which("mpremote")
    if not found:
        raise SystemExit("deploy_firmware: mpremote not found (pip install mpremote==1.29.0)")
    return found


def plan(build: Path) -> tuple[list[str], list[str]]:
    """(directories, files) relative to ``build``, parents before children, as posix paths."""
    if not (build / "main.py").is_file():
        raise SystemExit(f"deploy_firmware: {build} has no main.py: run `make firmware` (tools/build_firmware.py)")
    # main.py last: a copy cut short (a reset, a pulled cable) leaves the old main.py, which still matches the
    # old modules' names, rather than a new main.py importing modules not yet copied.
    files = sorted(
        (
            p.relative_to(build).as_posix()
            for p in build.rglob("*")
            if p.is_file() and p.suffix in (".mpy", ".py") and "__pycache__" not in p.parts
        ),
        key=lambda f: (f == "main.py", f),
    )
    dirs = sorted({Path(f).parent.as_posix() for f in files} - {"."}, key=lambda d: (d.count("/"), d))
    return dirs, files


def command(port: str, build: Path, reset: str, exe: str | None = None) -> list[str]:
    dirs, files = plan(build)
    cmd = [exe or mpremote(), "connect", port, "resume"]
    # Directories first; and a module's old source (m.py) removed where m.mpy is deployed: MicroPython imports
    # m.py before m.mpy, so a stale source would shadow the new firmware. In the firmware's own folders (core/,
    # strap/...) a module the new build no longer has goes too: an old release's module left there could still be
    # imported by name. Nothing else is touched: the top folder holds the strap's settings.json and the user's files.
    stale = [f[: -len(".mpy")] + ".py" for f in files if f.endswith(".mpy")]
    prepare = (
        f"import os\nkeep = {sorted(files)!r}\nfor d in {dirs!r}:\n    try:\n        os.mkdir(d)\n"
        "    except OSError:\n        pass\n"
        "    for n in os.listdir(d):\n        f = d + '/' + n\n"
        "        if (n.endswith('.py') or n.endswith('.mpy')) and f not in keep:\n            os.remove(f)\n"
        f"for f in {stale!r}:\n    try:\n        os.remove(f)\n    except OSError:\n        pass"
    )
    cmd += ["exec", prepare, "+"]
    for f in files:
        cmd += ["fs", "cp", str(build / f), ":" + f, "+"]
    cmd += RESETS[reset]
    if cmd[-1] == "+":
        cmd.pop()
    return cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0 or /dev/ttyACM0")
    parser.add_argument("--build", required=True, type=Path, help="tools/build_firmware.py output directory")
    parser.add_argument("--reset", choices=sorted(RESETS), default="soft", help="after copying (default: soft)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    # Only a device path: mpremote also takes rfc2217://, socket:// and port: forms, and its own shortcuts.
    if not args.dry_run and args.port.startswith("/dev/") and not Path(args.port).exists():
        # mpremote would say the port "may be in use by another program": a missing board is the likelier cause.
        print(f"deploy_firmware: no serial port {args.port} (is the strap plugged in?)", file=sys.stderr)
        return 2
    cmd = command(args.port, args.build, args.reset)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        print(f"deploy_firmware: mpremote failed ({proc.returncode})", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
