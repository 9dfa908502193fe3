"""The daemon's configuration: one TOML file, every setting with a sane default (no file needed).

```toml
[session]
directory = "~/breathsync-sessions"   # one SQLite file per session (paths here: relative to this file)
name = ""                             # default: the start time, e.g. 2026-11-22T10-00-00
resume = true                         # reopen the newest unfinished session (a crash less than 15 min ago)
therapist_baseline = ""               # file from `breathsync calibrate`; "" = learn in the first minutes

[straps]
ble = "system"                        # or "bumble:tcp-client:127.0.0.1:7402" (virtual straps)
therapist = "auto"                    # "auto" (by role), ble:<address-or-name>, serial:<port>, replay:<file>
client = "auto"
rate_hz = 25                          # the session's sample rate (25 or 50): a strap at another is set to it

[outputs]
lsl = true                            # LSL outlets for both raw streams, events and nudges
lsl_scope = "machine"                 # LSL discovery scope: machine, link, site (lab network)
status_interval_s = 1.0

[engine]                              # see docs/engine.md
[policy]                              # nudge policy: cooldown, caps, pattern, mute time
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config_table import read_toml, table_to_dataclass
from ..engine import Config as EngineSettings
from ..engine.config import config_from_dict
from ..errors import InputError
from ..link.sources import check_adapter, check_source

LSL_SCOPES = ("machine", "link", "site", "organization", "global")


@dataclass(frozen=True)
class SessionConfig:
    directory: str = "~/breathsync-sessions"
    name: str = ""
    resume: bool = True
    therapist_baseline: str = ""


@dataclass(frozen=True)
class StrapsConfig:
    ble: str = "system"
    therapist: str = "auto"
    client: str = "auto"
    rate_hz: int = 25


@dataclass(frozen=True)
class OutputsConfig:
    lsl: bool = True
    lsl_scope: str = "machine"
    status_interval_s: float = 1.0


@dataclass(frozen=True)
class DaemonConfig:
    session: SessionConfig = field(default_factory=SessionConfig)
    straps: StrapsConfig = field(default_factory=StrapsConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_session_name(name: str, where: str = "config") -> None:
    """A session name is a file name inside the sessions directory, never a path out of it."""
    control = any(ord(c) < 32 or ord(c) == 127 for c in name)  # a newline split the lines that show the name
    if name and (name != Path(name).name or name.startswith(".") or "\\" in name or name != name.strip() or control):
        raise InputError(
            f"{where}: session.name must be a plain file name "
            f"(no '/', '\\', control characters, leading '.' or spaces at either end), got {name!r}"
        )


def config_from_toml(data: dict[str, Any], where: str = "config") -> DaemonConfig:
    unknown = set(data) - {"session", "straps", "outputs", "engine", "policy"}
    if unknown:
        raise InputError(
            f"{where}: unknown section(s) {', '.join(sorted(unknown))}"
            " (known: session, straps, outputs, engine, policy)"
        )
    session = table_to_dataclass("session", SessionConfig, data.get("session", {}), where)
    straps = table_to_dataclass("straps", StrapsConfig, data.get("straps", {}), where)
    outputs = table_to_dataclass("outputs", OutputsConfig, data.get("outputs", {}), where)
    engine = config_from_dict({k: v for k, v in data.items() if k in ("engine", "policy")}, where)
    check_session_name(session.name, where)
    if not session.directory.strip():
        raise InputError(f"{where}: session.directory is empty")
    if straps.rate_hz not in (25, 50):
        raise InputError(f"{where}: straps.rate_hz must be 25 or 50 (got {straps.rate_hz})")
    if outputs.lsl_scope not in LSL_SCOPES:
        raise InputError(f"{where}: outputs.lsl_scope must be one of {', '.join(LSL_SCOPES)}")
    if not 0.1 <= outputs.status_interval_s <= 60:
        raise InputError(f"{where}: outputs.status_interval_s must be within [0.1, 60]")
    for role in ("therapist", "client"):
        try:
            check_source(getattr(straps, role))
        except InputError as exc:
            raise InputError(f"{where}: straps.{role}: {exc}") from None
    try:
        check_adapter(straps.ble)
    except InputError as exc:
        raise InputError(f"{where}: straps.ble: {exc}") from None
    return DaemonConfig(session, straps, outputs, engine)


def load_daemon_config(path: str | Path | None) -> DaemonConfig:
    """The configuration from ``path``, or all defaults when ``path`` is None."""
    if path is None:
        return DaemonConfig()
    config = config_from_toml(read_toml(path), str(path))
    # Paths in the file are relative to the file, wherever `breathsync run` is started from.
    here = Path(path).parent
    session = config.session
    session = dataclasses.replace(
        session,
        directory=_beside(here, session.directory),
        therapist_baseline=_beside(here, session.therapist_baseline) if session.therapist_baseline else "",
    )
    straps = dataclasses.replace(
        config.straps,
        therapist=_source_beside(here, config.straps.therapist),
        client=_source_beside(here, config.straps.client),
    )
    return dataclasses.replace(config, session=session, straps=straps)


def _source_beside(directory: Path, source: str) -> str:
    """A ``replay:<session file>`` source with its file relative to ``directory``; other sources as they are."""
    kind, _, path = source.partition(":")
    return f"replay:{_beside(directory, path)}" if kind == "replay" and path else source


def _beside(directory: Path, path: str) -> str:
    """``path`` as written (absolute, or from the home directory: ``~``), or else relative to ``directory``."""
    if path.startswith("~") or Path(path).is_absolute():
        return path
    return str(directory / path)
