"""Bad input to scan / stream / run / sim: one line on stderr, exit 2, and no file touched or left behind."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from open_files import open_descriptors

from breathsync.cli import COMMANDS, main
from breathsync.datasets import bundled_path
from breathsync.store import SessionStore

KEEP = b"role,kind,counter,host_t_s,value\nclient,sample,0,1.0000,123\n"
NO_BLUEZ = "no Bluetooth adapter available"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the system BLE backend here is BlueZ")


def one_line_error(capsys: pytest.CaptureFixture[str], message: str) -> tuple[str, str]:
    """(stdout, stderr) of the command just run, after checking stderr is one line naming ``message``."""
    out, err = capsys.readouterr()
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return out, err


@pytest.fixture
def no_bluez(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process sees no system D-Bus, hence no BlueZ, whatever the machine has."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-such-bus'}")


def replay_session(path: Path, role: str = "client", n: int = 25) -> Path:
    with SessionStore.create(path, {}) as store:
        store.add_samples(role, list(range(n)), [100.0 + i / 25 for i in range(n)], [1000 + i for i in range(n)])
    return path


# -- stream --csv: an existing file keeps its bytes, a new one is not left behind ----------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("foo:bar", "unknown source kind 'foo'"),
        ("ble:", "bad source 'ble:'"),
        ("replay:/nope.sqlite", "/nope.sqlite: no such session file"),
        ("serial:/dev/no-such-strap", "no serial port /dev/no-such-strap"),
    ],
)
def test_stream_bad_source_leaves_the_csv_alone(
    source: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep, new = tmp_path / "keep.csv", tmp_path / "new.csv"
    keep.write_bytes(KEEP)
    for target in (keep, new):
        assert main(["stream", "--therapist", source, "--csv", str(target), "--seconds", "2"]) == 2
        one_line_error(capsys, message)
    assert keep.read_bytes() == KEEP
    assert not new.exists()


def test_stream_link_failing_before_data_leaves_the_csv_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The source is valid, but its link fails when it runs (no therapist samples): still nothing lost."""
    session = replay_session(tmp_path / "s.sqlite", role="client")
    keep, new = tmp_path / "keep.csv", tmp_path / "new.csv"
    keep.write_bytes(KEEP)
    for target in (keep, new):
        assert main(["stream", "--therapist", f"replay:{session}", "--csv", str(target), "--seconds", "5"]) == 2
        one_line_error(capsys, "no samples for role 'therapist'")
    assert keep.read_bytes() == KEEP
    assert not new.exists()


@pytest.mark.parametrize("command", ["stream", "run"])
def test_start_up_failing_after_a_link_opened_leaves_no_file_open(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The therapist's replay link is opened, the client's session file is damaged: nothing stays open."""
    good = replay_session(tmp_path / "good.sqlite", role="therapist")
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a session" * 100)
    argv = [command, "--therapist", f"replay:{good}", "--client", f"replay:{damaged}"]
    extra = ["--seconds", "1"] if command == "stream" else ["--sessions", str(tmp_path / "sessions"), "--no-lsl"]
    assert main(argv + extra) == 2
    one_line_error(capsys, "not a breathsync session")
    assert open_descriptors(good) == 0


def test_a_replayed_session_found_damaged_mid_run_closes_the_session_it_fed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The source's damage was taken for the run's own store failing (a full disk), which leaves the session open on
    # purpose: the next run then resumed into it, two unrelated runs in one session.
    good = tmp_path / "good.sqlite"
    with SessionStore.create(good, {}) as store:  # the first block's samples arrive at once, before the failure
        store.add_samples("therapist", list(range(14)), [100.0] * 7 + [100.28] * 7, [1000] * 14)
    whole = replay_session(tmp_path / "whole.sqlite", role="client", n=25 * 600)
    damaged = tmp_path / "damaged.sqlite"
    pages = bytearray(whole.read_bytes())
    pages[8 * 4096 : -4096] = b"\xa5" * (len(pages) - 9 * 4096)  # opens, but its samples cannot be read
    damaged.write_bytes(pages)
    sessions = tmp_path / "sessions"
    argv = ["run", "--therapist", f"replay:{good}", "--client", f"replay:{damaged}", "--sessions", str(sessions)]
    assert main([*argv, "--no-lsl"]) == 2
    one_line_error(capsys, "damaged.sqlite: damaged session")
    [kept] = sessions.glob("*.sqlite")
    with SessionStore.open(kept, read_only=True) as store:
        assert len(store.samples("therapist").counters) > 0  # what came in is kept ...
        assert store.meta("closed") == "1"  # ... and the session is over: the next run starts a new one


def test_stream_replaces_the_csv_once_data_arrives(tmp_path: Path) -> None:
    session = replay_session(tmp_path / "s.sqlite", role="client", n=25)
    keep = tmp_path / "keep.csv"
    keep.write_bytes(KEEP + b"client,sample,1,1.0400,456\n" * 50)  # longer than what replaces it
    assert main(["stream", "--client", f"replay:{session}", "--csv", str(keep), "--seconds", "10"]) == 0
    with keep.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["counter"]) for r in rows] == list(range(25))
    assert [int(r["value"]) for r in rows] == [1000 + i for i in range(25)]
    # Arrival times on the wall clock (Unix seconds), as `breathsync run` stores them, not seconds since boot.
    assert all(abs(float(r["host_t_s"]) - time.time()) < 60 for r in rows)


def test_stream_never_overwrites_a_file_that_is_not_a_stream_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--csv` given the session being replayed (or a recording) replaced it with a few seconds of CSV.
    session = replay_session(tmp_path / "s.sqlite", role="client", n=25)
    recording = tmp_path / "recording.csv"
    recording.write_bytes(b"resp\n1\n2\n")
    for target in (session, recording):
        before = target.read_bytes()
        assert main(["stream", "--client", f"replay:{session}", "--csv", str(target), "--seconds", "10"]) == 2
        one_line_error(capsys, f"--csv {target}: exists and is not a breathsync stream CSV; not overwriting it")
        assert target.read_bytes() == before
    empty = tmp_path / "empty.csv"
    empty.touch()  # an empty file holds nothing to lose
    assert main(["stream", "--client", f"replay:{session}", "--csv", str(empty), "--seconds", "10"]) == 0
    assert empty.read_bytes().startswith(b"role,kind,counter,host_t_s,value")


def test_stream_to_a_device_file(tmp_path: Path) -> None:
    session = replay_session(tmp_path / "s.sqlite", role="client", n=25)
    assert main(["stream", "--client", f"replay:{session}", "--csv", os.devnull, "--seconds", "10"]) == 0


@linux_only
def test_stream_csv_on_a_full_disk_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = replay_session(tmp_path / "s.sqlite", n=25 * 60)
    assert main(["stream", "--client", f"replay:{session}", "--csv", "/dev/full", "--seconds", "10"]) == 2
    one_line_error(capsys, "cannot write /dev/full: No space left on device")


def test_stream_unwritable_csv_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    session = replay_session(tmp_path / "s.sqlite")
    target = tmp_path / "missing-dir" / "out.csv"
    assert main(["stream", "--client", f"replay:{session}", "--csv", str(target), "--seconds", "1"]) == 2
    one_line_error(capsys, f"cannot write {target}")


# -- run: nothing is created before the sources and the adapter are known to be usable ----------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--therapist", "foo:bar", "--client", "replay:S"], "unknown source kind 'foo'"),
        (["--therapist", "replay:/nope.sqlite", "--client", "replay:/nope.sqlite"], "no such session file"),
        (["--therapist", "serial:/dev/no-such-strap", "--client", "replay:S"], "no serial port"),
        (["--ble", "bogus"], "unknown BLE adapter 'bogus'"),
        (["--ble", "bumble:"], "unknown BLE adapter 'bumble:'"),
    ],
)
def test_run_rejects_bad_sources_before_creating_a_session(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = tmp_path / "sessions"
    for _ in range(2):  # a retry within the same second still reports the real error
        assert main(["run", *argv, "--no-lsl", "--sessions", str(sessions)]) == 2
        out, err = one_line_error(capsys, message)
        assert "session already exists" not in err
        assert out == ""  # no "new session ..." line
    assert not sessions.exists() or list(sessions.iterdir()) == []


def test_run_config_with_a_bad_source_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "breathsync.toml"
    for text, message in [
        ("[straps]\nclient = 'ble:'\n", "straps.client: bad source 'ble:'"),
        ("[straps]\nble = 'carrier-pigeon'\n", "straps.ble: unknown BLE adapter"),
    ]:
        config.write_text(text)
        assert main(["run", "--config", str(config), "--no-lsl", "--sessions", str(tmp_path / "s")]) == 2
        one_line_error(capsys, message)
    assert not (tmp_path / "s").exists()


def test_run_sessions_directory_must_be_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    therapist = replay_session(tmp_path / "therapist.sqlite", "therapist")
    client = replay_session(tmp_path / "client.sqlite", "client")
    replay = ["--therapist", f"replay:{therapist}", "--client", f"replay:{client}", "--no-lsl"]
    assert main(["run", *replay, "--sessions", ""]) == 2  # not a silent fall-back to ~/breathsync-sessions
    one_line_error(capsys, "--sessions: empty directory name")
    a_file = tmp_path / "sessions.csv"
    a_file.write_text("not a directory")
    assert main(["run", *replay, "--sessions", str(a_file)]) == 2
    one_line_error(capsys, "sessions.csv: not a directory")
    assert a_file.read_text() == "not a directory"
    # --name continues (or starts) a named session: a plain file name, never a path out of the directory.
    for name, message in [
        ("", "--name: empty session name"),
        ("../x", "--name: session.name must be a plain"),
        ("a\nb", "--name: session.name must be a plain file name (no '/', '\\', control characters"),
    ]:
        assert main(["run", *replay, "--sessions", str(tmp_path / "s"), "--name", name]) == 2
        one_line_error(capsys, message)
    assert not (tmp_path / "s").exists()
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "notes.sqlite").write_text("not a session")
    assert main(["run", *replay, "--sessions", str(tmp_path / "s2"), "--name", "notes"]) == 2
    _, err = one_line_error(capsys, f"cannot use session file {tmp_path / 's2' / 'notes.sqlite'}: not a")
    assert err.count("notes.sqlite") == 1  # the path once, not twice
    assert (tmp_path / "s2" / "notes.sqlite").read_text() == "not a session"
    assert main(["run", *replay, "--sessions", "~no-such-user-here/sessions"]) == 2  # was a RuntimeError traceback
    one_line_error(capsys, "~no-such-user-here/sessions: no home folder for '~no-such-user-here'")
    assert open_descriptors(therapist) == open_descriptors(client) == 0  # the links opened first are closed


# -- the system adapter without BlueZ: one line, not a traceback or a link retrying for ever ------


@linux_only
def test_scan_without_bluez_is_one_line(no_bluez: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--timeout", "2"]) == 2
    out, _ = one_line_error(capsys, NO_BLUEZ)
    assert out == ""  # not "no straps found"


@linux_only
@pytest.mark.parametrize("source", ["ble:AA:BB:CC:DD:EE:FF", "ble:strap-T", "auto"])
def test_stream_without_bluez_is_one_line_and_keeps_the_csv(
    source: str, no_bluez: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "keep.csv"
    keep.write_bytes(KEEP)
    assert main(["stream", "--therapist", source, "--csv", str(keep), "--seconds", "2"]) == 2
    out, _ = one_line_error(capsys, NO_BLUEZ)
    assert "connect-failed" not in out
    assert keep.read_bytes() == KEEP


@linux_only
def test_calibrate_without_bluez_gives_no_instructions_first(
    no_bluez: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "me.json")]) == 2
    out, _ = one_line_error(capsys, NO_BLUEZ)
    assert out == ""  # not "calibrating for 120 s: sit quietly ..."
    assert not (tmp_path / "me.json").exists()


def test_demo_sessions_must_be_a_directory_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["demo", "--sessions", str(a_file)]) == 2
    out, _ = one_line_error(capsys, "notes.txt: not a directory")
    assert out == "" and a_file.read_text() == "mine"
    assert main(["demo", "--sessions", ""]) == 2  # it recorded into the current directory
    assert one_line_error(capsys, "--sessions: empty directory name")[0] == ""


@linux_only
def test_demo_sessions_somewhere_unwritable_fail_before_the_straps_boot(
    micropython: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The error came after the whole demo (73 s), once the session was created; sysfs refuses even root.
    assert main(["demo", "--sessions", "/sys/breathsync-demo"]) == 2
    out, _ = one_line_error(capsys, "--sessions /sys/breathsync-demo: cannot write there")
    assert out == ""  # not the demo's banner


@linux_only
def test_run_without_bluez_creates_no_session(
    no_bluez: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = tmp_path / "sessions"
    for argv in ([], ["--therapist", "ble:strap-T", "--client", "ble:strap-C"]):
        assert main(["run", *argv, "--no-lsl", "--sessions", str(sessions)]) == 2
        one_line_error(capsys, NO_BLUEZ)
    assert not sessions.exists() or list(sessions.iterdir()) == []


@linux_only
def test_replay_sources_need_no_bluez(no_bluez: None, tmp_path: Path) -> None:
    """Only BLE sources touch the system adapter: a replay streams on a machine without Bluetooth."""
    session = replay_session(tmp_path / "s.sqlite")
    assert main(["stream", "--client", f"replay:{session}", "--seconds", "10"]) == 0


@linux_only
def test_scan_as_a_user_runs_it_on_a_machine_without_bluez(tmp_path: Path) -> None:
    """The command exactly as typed, in its own process, on a machine without a system D-Bus (pointed at a socket
    that does not exist, whatever this machine has: it used to be skipped wherever a D-Bus was present)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path / 'no-such-bus'}")
    proc = subprocess.run(
        [sys.executable, "-m", "breathsync", "scan", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert NO_BLUEZ in proc.stderr and "is BlueZ running?" in proc.stderr and "--ble bumble:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- --ble bumble:<transport>: a transport that cannot work is one line, never a traceback or a hang -


@pytest.fixture
def not_a_controller() -> Iterator[int]:
    """A loopback TCP port that answers like an SSH server, not an HCI controller."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_bumble_transport_that_cannot_open_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--ble", "bumble:tcp-client:127.0.0.1:99999", "--timeout", "1"]) == 2
    _, err = one_line_error(capsys, "cannot open Bumble transport 'tcp-client:127.0.0.1:99999'")
    assert err.count("tcp-client:127.0.0.1:99999") == 1, err  # named once, not once per layer


def test_a_bumble_file_transport_that_cannot_be_waited_on_is_one_line_at_once(tmp_path: Path) -> None:
    # 'file:' takes a serial port or a pty. A regular file or /dev/zero opened fine, then asyncio failed to watch it
    # inside a callback: its traceback went to stderr, and the power-on waited 10 s for a controller.
    regular = tmp_path / "hci.bin"
    regular.write_bytes(b"")
    for path, reason in ((regular, "cannot be waited on for data"), (tmp_path / "absent", "No such file")):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "breathsync", "scan", "--ble", f"bumble:file:{path}", "--timeout", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"cannot open Bumble transport 'file:{path}'" in proc.stderr and reason in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert time.monotonic() - started < 8, "waited for a controller"


def test_bumble_transport_to_something_else_gives_up(
    not_a_controller: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import breathsync.link.bumble_backend as backend

    monkeypatch.setattr(backend, "POWER_ON_TIMEOUT_S", 1.0)
    adapter = f"bumble:tcp-client:127.0.0.1:{not_a_controller}"
    assert main(["scan", "--ble", adapter, "--timeout", "1"]) == 2
    _, err = one_line_error(capsys, "no HCI controller answered")
    assert err.count(adapter.removeprefix("bumble:")) == 1, err


def test_virtual_peripheral_tool_rejects_nan(capsys: pytest.CaptureFixture[str]) -> None:
    from breathsync.sim.peripheral import main as peripheral_main

    for argv, message in [
        (["--rate-hz", "nan", "--seconds", "1"], "--rate-hz must be a finite number > 0"),
        (["--seconds", "nan"], "--seconds must be a finite number > 0"),
        (["--seconds", "-1"], "--seconds must be a finite number > 0"),
    ]:
        with pytest.raises(SystemExit) as exited:
            peripheral_main(argv)
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


# -- numeric options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scan", "--timeout", "-1"], "argument --timeout: must be > 0"),
        (["scan", "--timeout", "0"], "argument --timeout: must be > 0"),
        (["scan", "--timeout", "nan"], "argument --timeout: must be a finite number"),
        (["scan", "--timeout", "inf"], "argument --timeout: must be a finite number"),
        (["scan", "--timeout", "soon"], "argument --timeout: not a number"),
        (["calibrate", "--out", ""], "argument --out: empty file name"),  # not 'cannot write .'
        (["stream", "--csv", " "], "argument --csv: empty file name"),
        (["stream", "--seconds", "-1"], "argument --seconds: must be >= 0"),
        (["stream", "--seconds", "nan"], "argument --seconds: must be a finite number"),
        (["sim", "--synthetic", "--seed", "-1", "--seconds", "2"], "argument --seed: must be >= 0"),
        (["sim", "--synthetic", "--seed", "1.5"], "argument --seed: not an integer"),
        (["sim", "--synthetic", "--seconds", "nan"], "argument --seconds: must be a finite number"),
        (["sim", "--synthetic", "--seconds", "-1"], "argument --seconds: must be >= 0"),
        (["sim", "--therapist-input", "a.csv", "--client-input", "b.csv", "--rate", "inf"], "argument --rate"),
        (["sim", "--therapist-input", "a.csv", "--client-input", "b.csv", "--rate", "0"], "argument --rate"),
    ],
)
def test_bad_numbers_are_one_line_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    one_line_error(capsys, message)


def test_bare_command_shows_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: breathsync")
    words = " ".join(err.split())  # argparse wraps the help texts
    for name, help_text in COMMANDS:  # each command's one-line help, not only the usage line
        assert name in words and help_text in words


@pytest.mark.parametrize("argv", [["replay", "--help"], ["detect", "--help"], ["--help"]])
def test_offline_commands_do_not_load_the_bluetooth_stacks(argv: list[str]) -> None:
    # Every command module used to be imported to build the parser: `replay` paid ~0.5 s for Bumble and
    # bleak before reading a byte, half the time of a whole 8-minute replay.
    code = (
        "import sys\n"
        "from breathsync.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('bumble', 'bleak', 'sqlite3', 'matplotlib') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_replay_runs_on_one_thread(tmp_path: Path) -> None:
    # numpy's BLAS started a spinning worker per core: replay used ~30 % more CPU than its work needed.
    recording = str(bundled_path("bidmc_04_resp.csv.gz"))
    argv = ["replay", "--therapist", recording, "--client", recording, "--rate", "125"]
    code = (
        "import os, sys\n"
        "from breathsync.cli import main\n"
        f"sys.stdout = open(os.devnull, 'w')\nmain({argv!r})\nsys.stdout = sys.__stdout__\n"
        "print(len(os.listdir('/proc/self/task')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_a_closed_stdout_is_one_line_not_a_traceback() -> None:
    # `breathsync replay ... >&-`: Python starts with sys.stdout = None; writing crashed with AttributeError.
    recording = str(bundled_path("bidmc_04_resp.csv.gz"))
    args = ["replay", "--therapist", recording, "--client", recording, "--rate", "125"]
    proc = subprocess.run(
        [sys.executable, "-m", "breathsync", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        close_fds=True,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "breathsync: standard output is closed (to discard the output: > /dev/null)"
    ]


def test_stream_stopped_early_does_not_claim_the_recording_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = replay_session(tmp_path / "s.sqlite", role="client", n=25 * 60)  # a minute, replayed in real time
    assert main(["stream", "--client", f"replay:{session}", "--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert "link closed stopped" in out and "end of recording" not in out


TERMINATED_INSIDE_ASYNCIO = """
import asyncio, os, signal, sys
from breathsync.cli import _terminate_cleanly, _Terminated

async def main():
    asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)  # lands in a loop callback
    await asyncio.sleep(2)
    return 0

try:
    with _terminate_cleanly():
        sys.exit(asyncio.run(main()))
except _Terminated as exc:
    print("terminated", exc.signum)
"""


def test_sigterm_inside_an_event_loop_ends_the_command() -> None:
    # A command whose event loop has no signal handlers of its own (scan): raised inside a loop callback or a task,
    # any exception but SystemExit and KeyboardInterrupt is kept or logged by asyncio, and the command ran on.
    proc = subprocess.run(
        [sys.executable, "-c", TERMINATED_INSIDE_ASYNCIO], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.stdout.strip() == "terminated 15", proc.stdout + proc.stderr
