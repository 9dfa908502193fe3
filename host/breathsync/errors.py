"""One exception root for everything breathsync raises on purpose."""


class BreathsyncError(Exception):
    """Root of all breathsync errors. The CLI prints ``str(error)`` on one line and exits 2."""


class InputError(BreathsyncError):
    """A user-supplied file, column, option or value is unusable."""


class InterpreterError(BreathsyncError):
    """The MicroPython interpreter is missing or failed while running firmware code."""


def clipped(text: str, limit: int = 40) -> str:
    """``text`` as an error line quotes it: at most ``limit`` characters (a damaged cell, a 5000-digit value, is not
    repeated in full)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
