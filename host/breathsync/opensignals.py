"""OpenSignals text files: what a BITalino board's own software (PLUX OpenSignals) exports.

The file starts with ``# OpenSignals Text File Format``, then ``#`` lines holding the device's settings as JSON
(keyed by the device's address: its columns, sampling rate, and the sensor on each analog channel), then
``# EndOfHeader`` and tab-separated rows without a header row:

    # OpenSignals Text File Format. Version 1
    # {"00:07:80:4D:2E:76": {"column": ["nSeq", "I1", "I2", "O1", "O2", "A1"], "sampling rate": 1000,
    #    "label": ["A1"], "sensor": ["RESPBIT"], ...}}
    # EndOfHeader
    0	0	0	0	0	512

A column is named as in ``column`` (``A1``), or by its sensor (``RESPBIT``); the default ``resp`` finds the one
respiration sensor (``RESPIRATION_SENSORS``). Early exports (bioplux) have no ``column``: the sequence number, then
the ``label`` channels. Values stay raw ADC counts: the strap model fits its own gain.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, clipped

MARK = "# OpenSignals Text File Format"
END_OF_HEADER = "# EndOfHeader"
MAX_HEADER_LINES = 100  # a header that never ends is not one


@dataclass(frozen=True)
class OpenSignalsHeader:
    names: list[str]  # the data columns, in order
    column: str  # the one asked for, as named in ``names``
    sampling_rate_hz: float | None


def read_header(handle: io.TextIOBase, path: Path, column: str) -> OpenSignalsHeader:
    """Read the header after its first line (``MARK``) up to ``END_OF_HEADER``; the handle is then at the rows."""
    device = _device_settings(handle, path)
    columns, labels = device.get("column"), device.get("label")
    if not isinstance(columns, list) and isinstance(labels, list):
        columns = ["nSeq", *labels]  # early OpenSignals (bioplux): the sequence number, then the channels
    if not isinstance(columns, list) or not columns:
        raise InputError(f"{path}: OpenSignals header without its columns")
    names = [str(name) for name in columns]
    return OpenSignalsHeader(names, _column_of(path, device, names, column), _sampling_rate(path, device))


def stated_sampling_rate(handle: io.TextIOBase, path: Path) -> float | None:
    """The sampling rate the header after its first line (``MARK``) states, if it states one."""
    return _sampling_rate(path, _device_settings(handle, path))


def _device_settings(handle: io.TextIOBase, path: Path) -> dict[str, object]:
    """The one device's settings, read up to ``END_OF_HEADER``."""
    settings: object = None
    for _ in range(MAX_HEADER_LINES):
        line = handle.readline()
        text = line.strip()
        if not line or not text.startswith("#"):
            raise InputError(f"{path}: OpenSignals header without {END_OF_HEADER!r}")
        if text == END_OF_HEADER:
            break
        if text[1:].lstrip().startswith("{"):
            try:
                settings = json.loads(text[1:])
            except (ValueError, RecursionError):  # RecursionError: nested a thousand deep
                raise InputError(f"{path}: OpenSignals header: its device settings are not JSON") from None
    else:
        raise InputError(f"{path}: OpenSignals header without {END_OF_HEADER!r}")
    if not isinstance(settings, dict) or not settings:
        raise InputError(f"{path}: OpenSignals header without the device's settings")
    if len(settings) > 1:
        raise InputError(
            f"{path}: OpenSignals file of {len(settings)} devices; export each device to a file of its own"
        )
    device = next(iter(settings.values()))
    if not isinstance(device, dict):
        raise InputError(f"{path}: OpenSignals header without the device's settings")
    return device


def _sampling_rate(path: Path, device: dict[str, object]) -> float | None:
    rate = device.get("sampling rate")
    if rate is None:
        return None
    try:
        if isinstance(rate, bool) or not isinstance(rate, int | float | str) or "_" in str(rate):  # '2_5': not 25
            rate_hz = math.nan
        else:
            rate_hz = float(rate)
    except (ValueError, OverflowError):
        rate_hz = math.nan
    if not (0 < rate_hz < math.inf):
        raise InputError(f"{path}: OpenSignals header: 'sampling rate' is {clipped(str(rate), 24)!r}, not a rate")
    return rate_hz


# Respiration sensors as PLUX names them: RESPBIT, RESPBITREV, RESP, RESPIRATION; the piezo belt (PZT...) and
# inductance plethysmography (RIP).
RESPIRATION_SENSORS = ("resp", "pzt", "rip")


def _column_of(path: Path, device: dict[str, object], names: list[str], column: str) -> str:
    """``column`` itself when it names a column, else the channel of the sensor it names (or, for ``resp``, of the
    one respiration sensor). The i-th sensor is on the i-th of the last ``len(sensor)`` columns, as OpenSignals
    writes them (labels can be renamed)."""
    if any(name.casefold() == column.casefold() for name in names):
        return column
    sensors = device.get("sensor")
    if not isinstance(sensors, list) or not sensors or len(sensors) > len(names):
        return column  # not found: the caller says which columns there are
    pairs = list(zip(names[-len(sensors) :], (str(sensor) for sensor in sensors), strict=True))
    wanted = column.casefold()
    found = [name for name, sensor in pairs if sensor.casefold() == wanted]
    if not found and wanted == "resp":
        found = [name for name, sensor in pairs if sensor.casefold().startswith(RESPIRATION_SENSORS)]
    if len(found) > 1:
        raise InputError(
            f"{path}: {len(found)} respiration channels ({', '.join(found)}): pick one with --column"
            if wanted == "resp"
            else f"{path}: sensor {clipped(column, 24)!r} is on {len(found)} channels ({', '.join(found)})"
        )
    if not found:
        shown = ", ".join(f"{name}={clipped(sensor, 16)}" for name, sensor in pairs[:12])
        raise InputError(
            f"{path}: no column or sensor {clipped(column, 24)!r} (channels: {shown}); name one with --column"
        )
    return found[0]
