"""The real mpremote deploy path (tools/deploy_firmware.py) against the MicroPython unix port on a pseudo-terminal.

The unix port's REPL runs on one pty; a thread bridges it to a second pty whose slave path
mpremote opens as its "serial port" (NOTES.md: ``resume``, or mpremote's soft reset would exit
the unix port). The device's filesystem is the interpreter's working directory.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def firmware_version() -> str:
    match = re.search(r'^FIRMWARE_VERSION = "([^"]+)"', (REPO / "firmware" / "config.py").read_text(), re.M)
    assert match is not None
    return match.group(1)


sys.path.insert(0, str(REPO / "tools"))

import deploy_firmware  # noqa: E402

pytestmark = pytest.mark.micropython


class PtyBoard:
    """The unix port's REPL behind a pty pair, exposed as ``port`` (a /dev/pts/N path)."""

    def __init__(self, micropython: str, root: Path) -> None:
        self.repl_master, repl_slave = pty.openpty()
        tty.setraw(repl_slave)
        self.host_master, host_slave = pty.openpty()
        tty.setraw(host_slave)
        self.port = os.ttyname(host_slave)
        self._host_slave = host_slave
        env = dict(os.environ, MICROPYPATH=".frozen")
        self.proc = subprocess.Popen(
            [micropython],
            stdin=repl_slave,
            stdout=repl_slave,
            stderr=repl_slave,
            cwd=root,
            env=env,
            close_fds=True,
        )
        os.close(repl_slave)
        self._stop = False
        self._thread = threading.Thread(target=self._bridge, daemon=True)
        self._thread.start()

    def _bridge(self) -> None:
        pairs = {self.repl_master: self.host_master, self.host_master: self.repl_master}
        while not self._stop:
            try:
                ready, _w, _x = select.select(list(pairs), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if data:
                    os.write(pairs[fd], data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.proc.kill()
        self.proc.wait(timeout=5)
        for fd in (self.repl_master, self.host_master, self._host_slave):
            os.close(fd)


@pytest.fixture
def board(micropython: str, tmp_path: Path) -> Iterator[tuple[PtyBoard, Path]]:
    root = tmp_path / "device"
    root.mkdir()
    b = PtyBoard(micropython, root)
    try:
        yield b, root
    finally:
        b.close()


def test_a_port_that_does_not_exist_is_named_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # mpremote said the missing port 'may be in use by another program', sending the developer the wrong way.
    port = "/dev/ttyACM-breathsync-test-none"
    assert deploy_firmware.main(["--port", port, "--build", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"deploy_firmware: no serial port {port} (is the strap plugged in?)"


def test_plan_lists_every_built_file(tmp_path: Path) -> None:
    build = tmp_path / "b"
    (build / "core").mkdir(parents=True)
    (build / "strap").mkdir()
    for name in ("main.py", "config.mpy", "core/packets.mpy", "strap/app.mpy"):
        (build / name).write_bytes(b"x")
    dirs, files = deploy_firmware.plan(build)
    assert dirs == ["core", "strap"] and files == ["config.mpy", "core/packets.mpy", "strap/app.mpy", "main.py"]
    cmd = deploy_firmware.command("/dev/ttyUSB0", build, "soft", exe="mpremote")
    assert cmd[:4] == ["mpremote", "connect", "/dev/ttyUSB0", "resume"] and cmd[-1] == "soft-reset"
    with pytest.raises(SystemExit):
        deploy_firmware.plan(tmp_path)


def test_deploy_with_mpremote_to_the_unix_port(board: tuple[PtyBoard, Path], tmp_path: Path) -> None:
    b, root = board
    build = tmp_path / "build"
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_firmware.py"), "--march", "x64", "--out", str(build), "--quiet"],
        check=True,
    )
    (root / "strap").mkdir(exist_ok=True)
    (root / "strap" / "app.py").write_text("raise ImportError('the old source, shadowing app.mpy')\n")
    (root / "strap" / "retired.mpy").write_bytes(b"M")  # a module an older release had
    (root / "strap" / "notes.txt").write_text("kept")  # not a module
    (root / "settings.json").write_text('{"role": "therapist"}')  # the strap's own settings
    (root / "mine.py").write_text("x = 1\n")  # the user's file at the top
    rc = deploy_firmware.main(["--port", b.port, "--build", str(build), "--reset", "none"])
    assert rc == 0
    assert not (root / "strap" / "app.py").exists()  # a stale source would be imported before app.mpy
    assert not (root / "strap" / "retired.mpy").exists()
    assert (root / "strap" / "notes.txt").read_text() == "kept" and (root / "mine.py").exists()
    assert (root / "settings.json").read_text() == '{"role": "therapist"}'
    _dirs, files = deploy_firmware.plan(build)
    for f in files:
        assert (root / f).read_bytes() == (build / f).read_bytes(), f
    # The modules import on the "device" (main.py is not imported: it would start the strap).
    mpremote = deploy_firmware.mpremote()
    code = (
        "import sys\nsys.path.insert(0, '')\n"
        "from core import packets\nfrom strap.stream import Streamer\nimport config\n"
        "print('deployed', packets.PROTOCOL_VERSION, config.FIRMWARE_VERSION, Streamer.__name__)"
    )
    out = subprocess.run(
        [mpremote, "connect", b.port, "resume", "exec", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert f"deployed 1 {firmware_version()} Streamer" in out.stdout
    ls = subprocess.run(
        [mpremote, "connect", b.port, "resume", "fs", "ls", ":strap"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "app.mpy" in ls.stdout


def test_make_flash_checks_the_image_and_the_port_before_erasing_and_says_why_on_stderr(tmp_path: Path) -> None:
    image = tmp_path / "ESP32_GENERIC_S3.bin"
    image.write_bytes(b"\xe9" + bytes(63))
    for args, message in [
        ([], "usage: make flash"),
        ([f"FIRMWARE={tmp_path / 'absent.bin'}"], "no firmware image"),
        ([f"FIRMWARE={REPO / 'README.md'}"], "README.md is not an ESP32 firmware image (it does not start with"),
        ([f"FIRMWARE={image}", f"PORT={tmp_path / 'ttyACM9'}"], "no serial port"),
    ]:
        proc = subprocess.run(["make", "-s", "-C", str(REPO), "flash", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and proc.stdout == "", (proc.stdout, proc.stderr)
        assert not args or "nothing erased" in proc.stderr
