"""How the ``labelstitch`` process behaves: warnings as one line each on stderr, and
SIGTERM/SIGINT turned into a clean stop (workers stopped at once, then the run unwinds)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .. import api

__all__ = ["Stopped", "handle_signals", "log_to_stderr"]


class _WarningsToStderr(logging.Handler):
    """Warnings of the ``labelstitch`` logger as ``labelstitch: warning: ...`` lines, each
    once, on whatever ``sys.stderr`` is when they come."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"labelstitch: warning: {record.getMessage()}", file=sys.stderr, flush=True)


def log_to_stderr() -> None:
    logger = logging.getLogger("labelstitch")
    if not any(isinstance(h, _WarningsToStderr) for h in logger.handlers):
        logger.addHandler(_WarningsToStderr(logging.WARNING))


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal (SIGTERM from a scheduler, SIGINT from Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    """On SIGTERM or SIGINT: stop the running items of every executor at once, then unwind
    (staging removed, locks released, the run status says interrupted); a second signal
    while that happens is ignored, so the cleanup is not cut short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    api.stop_running_work()
    api.stop_with(Stopped(signum))


def _quiet_about_stops(default: Callable[[Any], object]) -> Callable[[Any], object]:
    """``sys.unraisablehook`` that drops a :class:`Stopped` raised where Python cannot
    propagate it (a garbage-collector callback, a ``__del__``) instead of printing its
    traceback: ``stop_with`` remembered it, and the run still ends as stopped."""

    def hook(unraisable: Any) -> object:
        return None if isinstance(unraisable.exc_value, Stopped) else default(unraisable)

    return hook


def handle_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        sys.unraisablehook = _quiet_about_stops(sys.unraisablehook)
