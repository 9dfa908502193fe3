"""Benchmarks (``make bench``): each ``bench/bench_*.py`` measures an issue's targets.

Every benchmark module defines ``run() -> str`` returning a Markdown report; it writes that
report under ``bench/results/`` itself and the runner prints it. Benchmarks read the full data
set from ../shared/data and report clearly (rather than fail) when it is absent.
"""
