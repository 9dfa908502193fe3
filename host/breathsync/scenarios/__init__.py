"""Seeded dyad scenarios from real respiration recordings, with known ground truth."""

from .generate import KINDS, Kind, Options, Scenario, make_scenario, scenario_set
from .sources import RespSource, bidmc_sources, biopeaks_segments, bundled_sources, make_source

__all__ = [
    "KINDS",
    "Kind",
    "Options",
    "RespSource",
    "Scenario",
    "bidmc_sources",
    "biopeaks_segments",
    "bundled_sources",
    "make_scenario",
    "make_source",
    "scenario_set",
]
