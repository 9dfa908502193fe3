"""Per-strap settings: config.py defaults plus validated overrides persisted as JSON on flash.

Only the keys in ``SCHEMA`` exist. Every value is checked for type, range and allowed values
before it is used or stored; safety limits can only be tightened below config.py. A bad value
is rejected with a status code, never raised, so a malformed command or a corrupt file cannot
crash the strap. The file holds overrides only, so a firmware update's new defaults apply.

Status codes (small ints, meant to be reported to the host as they are):

====  =================  ===========================================================
code  name               meaning
====  =================  ===========================================================
0     OK                 accepted / loaded / saved
1     ERR_UNKNOWN_KEY    no such setting
2     ERR_TYPE           wrong JSON type (e.g. "25" or 25.0 or true for an int)
3     ERR_RANGE          int outside [min, max], or string length / characters invalid
4     ERR_CHOICE         not one of the allowed values
5     ERR_IO             flash read/write failed; in-memory values unchanged by load
6     ERR_CORRUPT        file unreadable, not JSON, not an object, or too large:
                         every setting fell back to its default
7     ERR_BAD_ENTRY      file parsed, but some entries were rejected and dropped
                         (their keys are in ``rejected``); the others were applied
====  =================  ===========================================================

A missing file is not an error: load() returns OK with defaults.
"""

import json
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


OK = const(0)
ERR_UNKNOWN_KEY = const(1)
ERR_TYPE = const(2)
ERR_RANGE = const(3)
ERR_CHOICE = const(4)
ERR_IO = const(5)
ERR_CORRUPT = const(6)
ERR_BAD_ENTRY = const(7)
STATUS_NAMES = (
    "OK",
    "ERR_UNKNOWN_KEY",
    "ERR_TYPE",
    "ERR_RANGE",
    "ERR_CHOICE",
    "ERR_IO",
    "ERR_CORRUPT",
    "ERR_BAD_ENTRY",
)

# Value kinds in the schema.
INT = const(0)  # (min, max) inclusive
CHOICE = const(1)  # tuple of allowed values (all of one type)
STR = const(2)  # (min_len, max_len), printable ASCII
BOOL = const(3)

_ENOENT = const(2)


def schema(cfg):
    """key -> (kind, a, b, default), built from the config module ``cfg``."""
    return {
        "rate_hz": (CHOICE, cfg.SAMPLE_RATES_HZ, None, cfg.SAMPLE_RATE_HZ),
        "role": (CHOICE, cfg.ROLES, None, cfg.ROLE_DEFAULT),
        # "" = BLE_NAME_PREFIX, the same for every strap: hosts tell such straps apart by their role.
        "name": (STR, 0, cfg.BLE_NAME_MAX_LEN, ""),
        "sensor": (CHOICE, cfg.SENSORS, None, cfg.SENSOR_DEFAULT),
        "haptic": (CHOICE, cfg.HAPTICS, None, cfg.HAPTIC_DEFAULT),
        "haptic_enabled": (BOOL, None, None, True),
        # Wired mode: packets framed over the USB serial port instead of BLE (docs/protocol.md 8).
        "wired": (BOOL, None, None, False),
        "lps22_addr": (CHOICE, (0x5C, 0x5D), None, cfg.LPS22_ADDR),
        "lps22_gain_shift": (INT, 0, 8, cfg.LPS22_GAIN_SHIFT),
        # Safety limits: the config value is the ceiling; overrides may only lower it.
        "haptic_max_intensity_pct": (INT, 0, cfg.HAPTIC_MAX_INTENSITY_PCT, cfg.HAPTIC_MAX_INTENSITY_PCT),
        "haptic_max_on_ms": (INT, cfg.HAPTIC_MIN_ON_MS, cfg.HAPTIC_MAX_ON_MS, cfg.HAPTIC_MAX_ON_MS),
        "haptic_duty_max_pct": (INT, 1, cfg.HAPTIC_DUTY_MAX_PCT, cfg.HAPTIC_DUTY_MAX_PCT),
        "haptic_host_silent_ms": (INT, 500, cfg.HAPTIC_HOST_SILENT_MS, cfg.HAPTIC_HOST_SILENT_MS),
    }


def validate(rule, value):
    """Status code for ``value`` under ``rule`` (kind, a, b, default)."""
    kind = rule[0]
    if kind == INT:
        if type(value) is not int:
            return ERR_TYPE
        return OK if rule[1] <= value <= rule[2] else ERR_RANGE
    if kind == CHOICE:
        if type(value) is not type(rule[1][0]):
            return ERR_TYPE
        return OK if value in rule[1] else ERR_CHOICE
    if kind == STR:
        if type(value) is not str:
            return ERR_TYPE
        if not rule[1] <= len(value) <= rule[2]:
            return ERR_RANGE
        for ch in value:
            if not 32 <= ord(ch) <= 126:
                return ERR_RANGE
        return OK
    if kind == BOOL:
        return OK if type(value) is bool else ERR_TYPE
    return ERR_TYPE


class Settings:
    """Effective settings of one strap. ``path`` is the JSON file on flash."""

    def __init__(self, path, cfg=None, max_bytes=None):
        if cfg is None:
            import config as cfg
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else cfg.SETTINGS_MAX_BYTES
        self.schema = schema(cfg)
        self._over = {}
        self.load_status = OK
        self.rejected_why = []  # (key, value, status) per entry load() rejected

    def get(self, key):
        """Override or default. An unknown key is a programming error (KeyError)."""
        if key in self._over:
            return self._over[key]
        return self.schema[key][3]

    @property
    def rejected(self):
        """Keys of the entries ``load`` rejected."""
        return [key for key, _value, _status in self.rejected_why]

    def load_message(self):
        """One line on what ``load`` rejected ('' when nothing): which entries, their values and why."""
        status = self.load_status
        if status == OK:
            return ""
        if status != ERR_BAD_ENTRY:
            return "settings: %s (%d); every setting at its default" % (STATUS_NAMES[status], status)
        parts = []
        for key, value, why in self.rejected_why:
            told = "default %r used" % (self.schema[key][3],) if key in self.schema else "ignored"
            parts.append("%s=%r %s, %s" % (key, value, STATUS_NAMES[why], told))
        return "settings: %s (%d): %s; the other entries applied" % (STATUS_NAMES[status], status, "; ".join(parts))

    def overrides(self):
        return dict(self._over)

    def effective(self):
        return {key: self.get(key) for key in self.schema}

    def check(self, key, value):
        rule = self.schema.get(key)
        if rule is None:
            return ERR_UNKNOWN_KEY
        return validate(rule, value)

    def set(self, key, value):
        """Validate and apply in memory (call save() to persist); returns a status code."""
        status = self.check(key, value)
        if status == OK:
            if value == self.schema[key][3] and type(value) is type(self.schema[key][3]):
                self._over.pop(key, None)  # back to default: keep the file minimal
            else:
                self._over[key] = value
        return status

    def update(self, values):
        """All-or-nothing: returns (OK, None) or (status, first offending key)."""
        if not isinstance(values, dict):
            return ERR_TYPE, None
        for key in values:
            status = self.check(key, values[key])
            if status != OK:
                return status, key
        for key in values:
            self.set(key, values[key])
        return OK, None

    def load(self):
        """Read the file; returns (and stores in load_status) a status code. Never raises."""
        self.rejected_why = []
        try:
            with open(self.path, "rb") as f:
                raw = f.read(self.max_bytes + 1)
        except OSError as e:
            self._over = {}
            self.load_status = OK if e.args and e.args[0] == _ENOENT else ERR_IO
            return self.load_status
        except Exception:
            self._over = {}
            self.load_status = ERR_IO
            return self.load_status
        try:
            if len(raw) > self.max_bytes:
                raise ValueError("too large")
            data = json.loads(raw.decode())
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except Exception:  # any garbage from a torn write or worn flash
            self._over = {}
            self.load_status = ERR_CORRUPT
            return self.load_status
        self._over = {}
        for key in data:
            status = self.set(key, data[key])
            if status != OK:
                self.rejected_why.append((key, data[key], status))
        self.load_status = ERR_BAD_ENTRY if self.rejected_why else OK
        return self.load_status

    def save(self):
        """Write the overrides atomically (temp file + rename); returns a status code."""
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(self._over))
            try:
                os.rename(tmp, self.path)
            except OSError:  # FAT cannot rename over an existing file
                os.remove(self.path)
                os.rename(tmp, self.path)
        except Exception:
            return ERR_IO
        return OK

    def reset(self):
        """Back to defaults and delete the file; returns a status code."""
        self._over = {}
        try:
            os.remove(self.path)
        except OSError as e:
            if not (e.args and e.args[0] == _ENOENT):
                return ERR_IO
        return OK
