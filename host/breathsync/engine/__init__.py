"""Online entrainment engine: does the therapist's breathing follow the client's?

Public API: ``EntrainmentEngine`` (feed it ``StreamItem`` records), ``Config`` / ``load_config``,
the output records, and the replay core shared with the live daemon.
"""

from ..roles import Role
from .config import Config, EngineConfig, PolicyConfig, load_config
from .engine import EntrainmentEngine
from .person import learn_baseline
from .policy import NudgePolicy, haptic_pattern
from .replay import dyad_stream, missing_as_dropouts, run_engine, strap_stream
from .state import Baseline, Efficacy, EngineState, HapticPattern, Nudge, Output
from .stream import Mute, NudgeUndelivered, StrapBlock, StrapBreath, StreamItem

__all__ = [
    "Baseline",
    "Config",
    "Efficacy",
    "EngineConfig",
    "EngineState",
    "EntrainmentEngine",
    "HapticPattern",
    "Mute",
    "Nudge",
    "NudgePolicy",
    "NudgeUndelivered",
    "Output",
    "PolicyConfig",
    "Role",
    "StrapBlock",
    "StrapBreath",
    "StreamItem",
    "dyad_stream",
    "haptic_pattern",
    "learn_baseline",
    "load_config",
    "missing_as_dropouts",
    "run_engine",
    "strap_stream",
]
