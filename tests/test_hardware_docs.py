"""hardware/ documents agree with the firmware: pin table vs config.py, power budget arithmetic."""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HW = REPO / "hardware"
if str(REPO / "firmware") not in sys.path:
    sys.path.insert(0, str(REPO / "firmware"))

import config  # noqa: E402

# Seeed XIAO ESP32-S3: board pin -> GPIO; ADC1 is GPIO1-10; strapping pins 0, 3, 45, 46.
XIAO_S3 = {"D0": 1, "D1": 2, "D2": 3, "D3": 4, "D4": 5, "D5": 6, "D6": 43, "D7": 44, "D8": 7, "D9": 8, "D10": 9}
ADC1_GPIOS = set(range(1, 11))
STRAPPING_GPIOS = {0, 3, 45, 46}
DIRECTIONS = {"in", "out", "bidir", "analog_in"}


def pinout() -> list[dict[str, str]]:
    with (HW / "pinout.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["signal", "gpio", "board_pin", "direction", "notes"]
    return rows


def config_pins() -> dict[str, int]:
    return {name[4:]: getattr(config, name) for name in dir(config) if name.startswith("PIN_")}


def test_pinout_matches_config_exactly() -> None:
    table = {row["signal"]: int(row["gpio"]) for row in pinout()}
    pins = {k: v for k, v in config_pins().items() if v >= 0}  # -1 = not fitted
    assert table == pins


def test_pinout_is_electrically_sane() -> None:
    rows = pinout()
    gpios = [int(r["gpio"]) for r in rows]
    assert len(gpios) == len(set(gpios)), "a GPIO is used twice"
    for r in rows:
        gpio = int(r["gpio"])
        assert r["direction"] in DIRECTIONS, r
        assert gpio not in STRAPPING_GPIOS, r
        if r["direction"] == "analog_in":
            assert gpio in ADC1_GPIOS, f"{r['signal']}: ADC2 cannot be used with the radio on"
        for label in re.findall(r"D\d+", r["board_pin"]):
            assert XIAO_S3[label] == gpio, r
    assert config.BOARD == "xiao-esp32s3"  # XIAO_S3 above describes this board


def test_wiring_mentions_every_pin() -> None:
    text = (HW / "wiring.md").read_text()
    for r in pinout():
        if r["signal"] == "LED":
            continue  # on the board
        assert re.search(rf"GPIO{r['gpio']}\b", text), r["signal"]


def power_rows() -> list[dict[str, str]]:
    with (HW / "power_budget.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_power_budget_recomputes() -> None:
    rows = power_rows()
    battery = {r["item"]: float(r["value"]) for r in rows if r["section"] == "battery"}
    result = {r["item"]: float(r["value"]) for r in rows if r["section"] == "result"}
    loads = [r for r in rows if r["section"] == "load"]
    chip_duty = sum(float(r["duty"]) for r in loads if r["group"] == "chip")
    assert chip_duty == pytest.approx(1.0), "chip states are exclusive: duties must sum to 1"
    for r in loads:
        assert 0 < float(r["duty"]) <= 1 and float(r["value"]) > 0, r
    average_ma = sum(float(r["value"]) * float(r["duty"]) for r in loads)
    runtime_h = battery["capacity"] * battery["usable_fraction"] / average_ma
    assert result["average_current"] == pytest.approx(average_ma, abs=0.005)
    assert result["runtime"] == pytest.approx(runtime_h, abs=0.05)
    assert runtime_h >= battery["target_runtime"] >= 24
    assert battery["capacity"] == config.BATTERY_CAPACITY_MAH
    # The document shows the same numbers as the CSV.
    text = (HW / "power_budget.md").read_text()
    assert f"= {average_ma:.2f} mA" in text
    assert f"{runtime_h:.1f} h >= 24 h" in text


def test_hardware_docs_exist_and_cover_the_brief() -> None:
    readme = (HW / "README.md").read_text()
    docs = ("bom.md", "pinout.csv", "wiring.md", "assembly.md", "power_budget.md", "power_budget.csv", "safety.md")
    for name in docs:
        assert (HW / name).is_file(), name
        assert name in readme, name
    bom = (HW / "bom.md").read_text()
    for part in ("XIAO ESP32S3", "1200 mAh", "Adafruit 519", "LPS22", "AO3400A", "1N5819", "DRV2605L", "webbing"):
        assert part in bom, part
    safety = (HW / "safety.md").read_text()
    assert "not a medical device" in safety
    for value in (config.HAPTIC_MAX_ON_MS, config.HAPTIC_MAX_INTENSITY_PCT, config.HAPTIC_DUTY_MAX_PCT):
        assert str(value) in safety
