"""One writer per feature store: a second extraction into the same folder fails at once with
one line naming the first, which goes on undisturbed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import Demo, make_demo, run_tuner
from tuner.features import ExtractOptions, FeatureStore, extract_features

FAST = ExtractOptions(weights="random", device="cpu", batch_size=16, progress=False)


def holder(lock: Path) -> int | None:
    try:
        return int(json.loads(lock.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_extraction_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    demo = make_demo(tmp_path / "demo")
    out, lock = tmp_path / "features", tmp_path / "features.lock"
    args = [
        "features", "extract", demo.patches, "--labels", demo.labels, "--out", out,
        "--weights", "random", "--device", "cpu", "--image-size", "64", "--batch-size", "4",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "tuner", "-q", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while holder(lock) != first.pid:
        assert first.poll() is None, f"the first extraction ended first: {first.communicate()}"
        assert time.monotonic() < deadline, "the first extraction never took the lock"
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-extraction, lock taken
    try:
        assert first.poll() is None
        second = run_tuner(*args, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines() == [
        f"tuner: error: feature store {str(out)!r} is being written by process {first.pid} on "
        f"{socket.gethostname()} (since {json.loads(lock.read_text())['since']}) (lock "
        f"{str(lock)!r}); wait for it to finish, or stop it and run this again to resume its work"
    ]
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert FeatureStore.open(out).manifest["counts"]["patches"] > 0  # verifies the checksum
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "features"]


def test_a_lock_left_by_a_killed_extraction_does_not_block(
    fresh_demo: Demo, tmp_path: Path
) -> None:
    lock = tmp_path / "features.lock"
    lock.write_text(json.dumps({"pid": 999999, "host": "gone", "since": "yesterday"}))
    store = extract_features(fresh_demo.patches, fresh_demo.labels, tmp_path / "features", FAST)
    assert store.path == tmp_path / "features"
    assert not lock.exists()
