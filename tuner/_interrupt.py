"""Stopping at a safe point: SIGTERM and SIGINT set a flag that long-running work checks.

A signal handler that raised an exception would raise it wherever the main thread happens to
be: inside a database commit, a checkpoint write, a store flush. Inside :func:`stop_on_signals`
the first SIGTERM or SIGINT only records the request; the work stops at its next safe point,
where :func:`check` raises :class:`Interrupted` (the trainer checks between batches, the worker
loop between trials) or where :func:`sleep` wakes up early (the budget poll, the database
backoff). A second signal raises :class:`Interrupted` at once, wherever the main thread is.

This is the lowest layer: storage, training and study all import it. Outside
:func:`stop_on_signals` nothing is ever requested, so :func:`check` costs nothing and a
Ctrl-C raises ``KeyboardInterrupt`` as usual.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Interrupted", "check", "request_stop", "sleep", "stop_on_signals", "stop_requested"]


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop the current work (a trial, the worker)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stop:
    """The process's stop request: the signal, whether it has been raised, a wake-up event."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.raised = False
        self.pending = threading.Event()  # set from the request until Interrupted is raised

    def reset(self) -> None:
        self.signum, self.raised = None, False
        self.pending.clear()


_stop = _Stop()


def request_stop(signum: int) -> None:
    """Ask the main thread to stop at its next safe point; a second request stops it at once."""
    if _stop.signum is not None:
        raise Interrupted(signum)
    _stop.signum = signum
    _stop.pending.set()


def stop_requested() -> bool:
    """Whether a stop was requested and has not been raised yet."""
    return _stop.pending.is_set()


def check() -> None:
    """A safe point: raise :class:`Interrupted` here if a stop is pending (main thread only).

    It is raised once; the clean-up that follows (failing the trial, queueing its retry) runs
    without being interrupted again, unless another signal arrives.
    """
    if _stop.pending.is_set() and threading.current_thread() is threading.main_thread():
        _stop.raised = True
        _stop.pending.clear()
        assert _stop.signum is not None
        raise Interrupted(_stop.signum)


def sleep(seconds: float) -> None:
    """Wait ``seconds``; in the main thread, end the wait early at a stop request and raise.

    Other threads (heartbeats) just sleep: they stop when the main thread tells them to.
    """
    if threading.current_thread() is not threading.main_thread():
        time.sleep(seconds)
        return
    check()
    if _stop.pending.wait(seconds):
        check()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT request a stop (see the module) instead of raising.

    Only the main thread can install signal handlers; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        request_stop(signum)

    _stop.reset()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop.reset()
