# ruff: noqa: UP031  (%-formatting: these scripts also run under MicroPython)
# Settings checks (validation, persistence, corrupt files). Each check_* takes a scratch
# directory; tests/test_config.py runs them under CPython (tmp_path) and runs this file under
# MicroPython: micropython hw_settings.py DIR   (MICROPYPATH=firmware), "ok NAME" per check.

import os
import sys

import config
import settings
from settings import (
    ERR_BAD_ENTRY,
    ERR_CHOICE,
    ERR_CORRUPT,
    ERR_IO,
    ERR_RANGE,
    ERR_TYPE,
    ERR_UNKNOWN_KEY,
    OK,
    Settings,
)

BAD_VALUES = (
    ("rate_hz", 30, ERR_CHOICE),
    ("rate_hz", "25", ERR_TYPE),
    ("rate_hz", 25.0, ERR_TYPE),
    ("rate_hz", True, ERR_TYPE),
    ("rate_hz", None, ERR_TYPE),
    ("role", "boss", ERR_CHOICE),
    ("role", 1, ERR_TYPE),
    ("sensor", "bmp280", ERR_CHOICE),
    ("haptic", "", ERR_CHOICE),
    ("haptic_enabled", 1, ERR_TYPE),
    ("lps22_addr", 0x77, ERR_CHOICE),
    ("lps22_gain_shift", 9, ERR_RANGE),
    ("haptic_max_intensity_pct", config.HAPTIC_MAX_INTENSITY_PCT + 1, ERR_RANGE),
    ("haptic_max_intensity_pct", -1, ERR_RANGE),
    ("haptic_max_on_ms", config.HAPTIC_MAX_ON_MS + 1, ERR_RANGE),
    ("haptic_max_on_ms", 5, ERR_RANGE),
    ("haptic_duty_max_pct", 0, ERR_RANGE),
    ("haptic_host_silent_ms", 60000, ERR_RANGE),
    ("name", "x" * (config.BLE_NAME_MAX_LEN + 1), ERR_RANGE),
    ("name", "tab\there", ERR_RANGE),
    ("name", "caf\u00e9", ERR_RANGE),
    ("name", 5, ERR_TYPE),
    ("name", ["a"], ERR_TYPE),
    ("no_such_key", 1, ERR_UNKNOWN_KEY),
    ("", 1, ERR_UNKNOWN_KEY),
)


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def check_missing_file_is_defaults(d):
    s = Settings(d + "/none.json", config)
    assert s.load() == OK and s.overrides() == {}
    assert s.get("rate_hz") == config.SAMPLE_RATE_HZ and s.get("role") == config.ROLE_DEFAULT
    assert s.get("haptic_max_on_ms") == config.HAPTIC_MAX_ON_MS


def check_bad_values_rejected(d):
    s = Settings(d + "/bad.json", config)
    before = s.effective()
    for key, value, code in BAD_VALUES:
        got = s.set(key, value)
        assert got == code, (key, value, got, code)
    assert s.effective() == before and s.overrides() == {}


def check_good_values(d):
    s = Settings(d + "/good.json", config)
    for key, value in (
        ("rate_hz", 50),
        ("role", "therapist"),
        ("name", "Anna's strap #2"),
        ("name", ""),
        ("sensor", "lps22"),
        ("haptic_enabled", False),
        ("haptic_max_intensity_pct", 0),
        ("haptic_host_silent_ms", 500),
    ):
        assert s.set(key, value) == OK, (key, value)
        assert s.get(key) == value


def check_update_all_or_nothing(d):
    s = Settings(d + "/u.json", config)
    assert s.update({"rate_hz": 50, "role": "boss"}) == (ERR_CHOICE, "role")
    assert s.get("rate_hz") == config.SAMPLE_RATE_HZ
    assert s.update({"rate_hz": 50, "role": "therapist"}) == (OK, None)
    assert s.get("rate_hz") == 50 and s.get("role") == "therapist"
    assert s.update([1, 2]) == (ERR_TYPE, None)


def check_save_load_roundtrip(d):
    path = d + "/rt.json"
    s = Settings(path, config)
    s.set("rate_hz", 50)
    s.set("name", "Client strap")
    s.set("haptic_duty_max_pct", 20)
    s.set("role", config.ROLE_DEFAULT)  # a default is not stored
    assert s.save() == OK and not _exists(path + ".tmp")
    assert s.save() == OK  # over an existing file
    t = Settings(path, config)
    assert t.load() == OK and t.rejected == []
    assert t.overrides() == {"rate_hz": 50, "name": "Client strap", "haptic_duty_max_pct": 20}
    assert t.effective() == s.effective()
    assert t.reset() == OK and not _exists(path) and t.overrides() == {}
    assert t.reset() == OK  # nothing to delete is fine


def check_corrupt_files_fall_back(d):
    path = d + "/corrupt.json"
    blobs = (
        b"",
        b"{",
        b'{"rate_hz": 50',
        b"\xff\xfe\x00garbage",
        b"[1, 2]",
        b'"rate_hz"',
        b"null",
        b"50",
        b"{}" + b" " * config.SETTINGS_MAX_BYTES,  # too large
        b"\x00" * 64,  # erased/zeroed flash page
    )
    for blob in blobs:
        _write(path, blob)
        s = Settings(path, config)
        s.set("rate_hz", 50)  # must be dropped by the failed load
        assert s.load() == ERR_CORRUPT, blob
        assert s.load_status == ERR_CORRUPT and s.overrides() == {}
        assert s.get("rate_hz") == config.SAMPLE_RATE_HZ


def check_bad_entries_dropped(d):
    path = d + "/partial.json"
    _write(path, b'{"rate_hz": 50, "role": "boss", "unknown": 1, "haptic_max_intensity_pct": 100, "name": "ok"}')
    s = Settings(path, config)
    assert s.load() == ERR_BAD_ENTRY
    assert sorted(s.rejected) == ["haptic_max_intensity_pct", "role", "unknown"]
    assert s.overrides() == {"rate_hz": 50, "name": "ok"}
    assert s.get("haptic_max_intensity_pct") == config.HAPTIC_MAX_INTENSITY_PCT


def check_io_errors_reported(d):
    s = Settings(d + "/no/such/dir/settings.json", config)
    s.set("rate_hz", 50)
    assert s.save() == ERR_IO
    assert s.load() == OK  # missing file: defaults
    os.mkdir(d + "/adir")
    s = Settings(d + "/adir", config)
    assert s.load() == ERR_IO and s.overrides() == {}


def check_status_names(d):
    assert settings.STATUS_NAMES[ERR_CORRUPT] == "ERR_CORRUPT"
    assert len(settings.STATUS_NAMES) == ERR_BAD_ENTRY + 1


def check_schema_matches_config(d):
    sch = settings.schema(config)
    assert sch["rate_hz"][1] == config.SAMPLE_RATES_HZ
    for key, rule in sch.items():
        assert settings.validate(rule, rule[3]) == OK, key  # every default is valid


CHECKS = [(name, obj) for name, obj in sorted(globals().items()) if name.startswith("check_")]


def main(d):
    bad = 0
    for name, fn in CHECKS:
        sub = d + "/" + name
        os.mkdir(sub)
        try:
            fn(sub)
            print("ok", name)
        except Exception as e:
            print("FAIL", name, repr(e))
            bad += 1
    return bad


if __name__ == "__main__":
    try:
        status = main(sys.argv[1])
    except BaseException as e:
        sys.stderr.write("hw_settings: %r\n" % (e,))
        status = 99
    sys.exit(1 if status else 0)
