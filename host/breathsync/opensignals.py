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
respiration sensor (``RESPBIT``, ``RESP``...). Values stay raw ADC counts: the strap model fits its own gain.
"""

from __future__ import annotations

import io
import json
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
            except ValueError:
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
    if not isinstance(device, dict) or not isinstance(device.get("column"), list):
        raise InputError(f"{path}: OpenSignals header without its columns")
    names = [str(name) for name in device["column"]]
    rate = device.get("sampling rate")
    sampling_rate_hz = float(rate) if isinstance(rate, int | float) and rate > 0 else None
    return OpenSignalsHeader(names, _column_of(path, device, names, column), sampling_rate_hz)


def _column_of(path: Path, device: dict[str, object], names: list[str], column: str) -> str:
    """``column`` itself when it names a column, else the channel of the sensor it names (or, for ``resp``, of the
    one respiration sensor)."""
    if any(name.casefold() == column.casefold() for name in names):
        return column
    labels, sensors = device.get("label"), device.get("sensor")
    if not (isinstance(labels, list) and isinstance(sensors, list)):
        return column  # not found: the caller says which columns there are
    pairs = [(str(label), str(sensor)) for label, sensor in zip(labels, sensors, strict=False)]
    wanted = column.casefold()
    found = [label for label, sensor in pairs if sensor.casefold() == wanted]
    if not found and wanted == "resp":
        found = [label for label, sensor in pairs if sensor.casefold().startswith("resp")]
    if len(found) > 1:
        raise InputError(
            f"{path}: {len(found)} respiration channels ({', '.join(found)}): pick one with --column"
            if wanted == "resp"
            else f"{path}: sensor {clipped(column, 24)!r} is on {len(found)} channels ({', '.join(found)})"
        )
    return found[0] if found else column
