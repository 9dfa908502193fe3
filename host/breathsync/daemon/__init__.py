"""The session daemon a therapist starts before a session (``breathsync run``)."""

from .config import DaemonConfig, load_daemon_config
from .daemon import Daemon, SessionChoice, SessionSummary, session_path

__all__ = ["Daemon", "DaemonConfig", "SessionChoice", "SessionSummary", "load_daemon_config", "session_path"]
