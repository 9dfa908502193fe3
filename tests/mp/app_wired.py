# ruff: noqa: UP031  (runs under MicroPython)
# firmware/main.py in wired mode (settings "wired": true): frames on stdout, commands from stdin.
# The plan has "wired": true; see app_harness.py.   micropython app_wired.py PLAN.json
from app_harness import main_entry

main_entry()
