"""breathsync: breathing-synchrony biofeedback for psychotherapy."""

__version__ = "0.1.0"
