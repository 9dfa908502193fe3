# breathsync: every target creates .venv on first use (make setup), so a fresh clone needs no manual step.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MARCH ?= xtensawin
# The XIAO ESP32-S3's native USB; a board with a USB-serial chip shows up as /dev/ttyUSB0.
PORT ?= /dev/ttyACM0
DEPLOY_ARGS ?=
FIRMWARE ?=
# esptool 5 (hyphenated commands); installed only by `make flash`, which no test runs (no board here).
ESPTOOL_VERSION := 5.6.0
BUILD := build/firmware-$(MARCH)

.PHONY: setup help test test-fast lint typecheck demo bench firmware firmware-check deploy flash coeffs clean

# Bytecode refreshed on every use: where the environment forbids writing it at import
# (PYTHONDONTWRITEBYTECODE), each command would otherwise compile ~25 modules first (~20 ms of a replay).
setup: $(STAMP)
	@$(BIN)/python -m compileall -q host/breathsync firmware/core

help:
	@echo "make demo        a whole virtual session (virtual straps, no hardware)"
	@echo "make test        lint, type check, firmware build check, every test (what CI runs)"
	@echo "make test-fast   the tests only, stopping at the first failure"
	@echo "make bench       benchmarks against ../shared/data; results in bench/results/ [BENCH=link ...]"
	@echo "make firmware    build the strap's .mpy files [MARCH=xtensawin]"
	@echo "make deploy      build and copy the firmware to a strap [PORT=$(PORT)] [DEPLOY_ARGS=...]"
	@echo "make flash       put MicroPython on a strap: FIRMWARE=file.bin [PORT=$(PORT)]"
	@echo "make coeffs      regenerate the detector's filter constants"
	@echo "make lint        ruff check and format check"
	@echo "make typecheck   mypy (strict) on the host package"
	@echo "make firmware-check  compile the firmware for the ESP32 (what make test runs)"
	@echo "make clean       remove build output and tool caches"
	@echo "make setup       create .venv (every target does it on first use)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "breathsync needs Python >= 3.11 (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

# Three workers: the suite mostly waits on virtual straps running in real time (1.5 min of CPU in 9 min alone),
# so on two cores it takes ~4 min instead of ~9.
TEST_WORKERS ?= 3

test: setup lint typecheck firmware-check
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-fast: setup
	$(BIN)/pytest -q -x

lint: setup
	$(BIN)/ruff check host tests tools bench firmware
	$(BIN)/ruff format --check host tests tools bench firmware docs

typecheck: setup
	$(BIN)/mypy

demo: setup
	$(BIN)/breathsync demo

bench: setup
	$(BIN)/python -m bench $(BENCH)

# Compile every firmware module for the device; viper type errors fail here.
firmware: setup
	$(BIN)/python tools/build_firmware.py --march $(MARCH) --out $(BUILD)

firmware-check: setup
	$(BIN)/python tools/build_firmware.py --march xtensawin --out build/firmware-check-xtensawin --quiet

deploy: firmware
	$(BIN)/python tools/deploy_firmware.py --port $(PORT) --build $(BUILD) $(DEPLOY_ARGS)

# Checks first: erasing a strap and then finding the image path mistyped would leave it with no MicroPython.
flash: setup
	@test -n "$(FIRMWARE)" || { echo "usage: make flash [PORT=/dev/ttyACM0] FIRMWARE=ESP32_GENERIC_S3-xxxx.bin" >&2; exit 2; }
	@test -f "$(FIRMWARE)" || { echo "make flash: no firmware image $(FIRMWARE) (nothing erased)" >&2; exit 2; }
	@test "$$(head -c 1 "$(FIRMWARE)" | od -An -tx1 | tr -d ' ')" = e9 || { echo "make flash: $(FIRMWARE) is not an ESP32 firmware image (it does not start with the image byte 0xE9; nothing erased)" >&2; exit 2; }
	@test -e "$(PORT)" || { echo "make flash: no serial port $(PORT) (is the strap plugged in? nothing erased)" >&2; exit 2; }
	$(BIN)/pip install --quiet esptool==$(ESPTOOL_VERSION)
	$(BIN)/esptool --port "$(PORT)" --baud 460800 write-flash --erase-all 0 "$(FIRMWARE)"

coeffs: setup
	$(BIN)/python tools/design_filters.py --write

clean:
	rm -rf build .mypy_cache .pytest_cache .ruff_cache
