"""GATT UUIDs of the strap (docs/protocol.md section 2), lowercase 128-bit strings as bleak wants."""

from __future__ import annotations

from typing import Final

from .packets import Channel

BASE_UUID_TEMPLATE: Final = "1291{:04x}-77c0-430f-a41b-024a72fc885e"


def _custom(short: int) -> str:
    return BASE_UUID_TEMPLATE.format(short)


def _sig(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


SERVICE_UUID: Final = _custom(0x1000)
SAMPLES_UUID: Final = _custom(0x1000 | Channel.SAMPLES)
EVENT_UUID: Final = _custom(0x1000 | Channel.EVENT)
STATUS_UUID: Final = _custom(0x1000 | Channel.STATUS)
RESPONSE_UUID: Final = _custom(0x1000 | Channel.RESPONSE)
HAPTIC_UUID: Final = _custom(0x1000 | Channel.HAPTIC)
CONTROL_UUID: Final = _custom(0x1000 | Channel.CONTROL)

CHARACTERISTIC_UUIDS: Final[dict[Channel, str]] = {
    Channel.SAMPLES: SAMPLES_UUID,
    Channel.EVENT: EVENT_UUID,
    Channel.STATUS: STATUS_UUID,
    Channel.RESPONSE: RESPONSE_UUID,
    Channel.HAPTIC: HAPTIC_UUID,
    Channel.CONTROL: CONTROL_UUID,
}
CHANNEL_BY_UUID: Final[dict[str, Channel]] = {uuid: channel for channel, uuid in CHARACTERISTIC_UUIDS.items()}

BATTERY_SERVICE_UUID: Final = _sig(0x180F)
BATTERY_LEVEL_UUID: Final = _sig(0x2A19)
DEVICE_INFORMATION_SERVICE_UUID: Final = _sig(0x180A)
MANUFACTURER_NAME_UUID: Final = _sig(0x2A29)
MODEL_NUMBER_UUID: Final = _sig(0x2A24)
SERIAL_NUMBER_UUID: Final = _sig(0x2A25)
HARDWARE_REVISION_UUID: Final = _sig(0x2A27)
FIRMWARE_REVISION_UUID: Final = _sig(0x2A26)
SOFTWARE_REVISION_UUID: Final = _sig(0x2A28)
