"""The session daemon a therapist starts before a session (``breathsync run``)."""

from .config import DaemonConfig, load_daemon_config
from .daemon import Daemon, SessionSummary
from .session_files import SessionChoice, session_path

__all__ = ["Daemon", "DaemonConfig", "SessionChoice", "SessionSummary", "load_daemon_config", "session_path"]
