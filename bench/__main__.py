"""Run the benchmarks: ``python -m bench [NAME ...]`` (default: all ``bench_*.py``)."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def available() -> list[str]:
    return sorted(p.stem[len("bench_") :] for p in BENCH_DIR.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(
            f"python -m bench [NAME ...]: run the benchmarks named (default: all: {', '.join(available())}); each "
            f"prints its report and writes it to {RESULTS_DIR.relative_to(BENCH_DIR.parent)}/NAME.md. Those that "
            "read recordings find them in ../shared/data (or BREATHSYNC_SHARED_DATA) and skip with a note without."
        )
        return 0
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(available())}", file=sys.stderr)
        return 2
    RESULTS_DIR.mkdir(exist_ok=True)
    for name in names:
        started = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        report = module.run()
        print(report)
        print(f"[bench {name}: {time.perf_counter() - started:.0f} s]\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
