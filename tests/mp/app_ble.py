# ruff: noqa: UP031  (runs under MicroPython)
# firmware/main.py over the bluetooth double with the in-process TestCentral: see app_harness.py.
#   micropython app_ble.py PLAN.json
from app_harness import main_entry

main_entry()
