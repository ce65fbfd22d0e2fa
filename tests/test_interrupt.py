"""Signals at a safe point: a SIGTERM is a request that long work checks, not an exception
raised wherever the main thread is; waits end early; a second signal stops at once.

The same on real workers (a SIGTERM during a checkpoint write) is in tests/test_faults.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tuner import _interrupt
from tuner._interrupt import Interrupted
from tuner.storage import open_storage
from tuner.study import Interrupted as StudyInterrupted


def send_later(seconds: float, signum: int = signal.SIGTERM) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signum))
    timer.start()
    return timer


def signal_and_wait(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)


def test_a_signal_is_a_request_raised_at_the_next_safe_point() -> None:
    with _interrupt.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler has run: nothing was raised here
        assert _interrupt.stop_requested()
        with pytest.raises(Interrupted) as raised:
            _interrupt.check()
        assert raised.value.signum == signal.SIGTERM
        _interrupt.check()  # raised once: the clean-up that follows runs on
        assert not _interrupt.stop_requested()
    assert StudyInterrupted is Interrupted


def test_a_wait_ends_early_at_a_signal() -> None:
    with _interrupt.stop_on_signals():
        send_later(0.5)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            _interrupt.sleep(60)
    assert time.monotonic() - started < 30


def test_a_second_signal_stops_at_once() -> None:
    with _interrupt.stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        send_later(0.5)
        started = time.monotonic()
        with pytest.raises(Interrupted) as raised:
            time.sleep(60)  # no safe point here: only the second signal gets out
        assert raised.value.signum == signal.SIGTERM
    assert time.monotonic() - started < 30


def test_the_database_backoff_ends_at_a_signal() -> None:
    storage_url = "postgresql://tuner@127.0.0.1:1/tuner"  # nothing listens on port 1
    with _interrupt.stop_on_signals():
        send_later(2.0)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            open_storage(storage_url, retry_seconds=120)
    assert time.monotonic() - started < 60


def test_outside_a_worker_signals_behave_as_usual() -> None:
    # Python's own handler, whatever pytest was started with (a job started with `&` from a
    # script inherits SIGINT ignored)
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _interrupt.stop_on_signals():
            pass
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):
            signal_and_wait(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, started_with)
    _interrupt.check()  # nothing requested: a no-op for `tuner train` and extraction
