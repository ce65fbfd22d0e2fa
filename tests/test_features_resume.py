"""A killed extraction resumes where it stopped and yields the same store as an unbroken one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import make_demo
from tuner.features import FeatureStore


def extract_command(demo_root: Path, out: Path, verbosity: str = "--quiet") -> list[str]:
    return [
        sys.executable, "-m", "tuner", verbosity, "features", "extract",
        str(demo_root / "patches"), "--labels", str(demo_root / "labels.csv"), "--out", str(out),
        "--weights", "random", "--device", "cpu", "--batch-size", "1", "--image-size", "128",
    ]  # fmt: skip


def test_killed_extraction_resumes_to_the_same_store(tmp_path: Path) -> None:
    demo = make_demo(tmp_path / "demo", cases=12)
    out = tmp_path / "interrupted"
    state = tmp_path / "interrupted.partial" / "state.json"
    process = subprocess.Popen(extract_command(demo.root, out), env={**os.environ})
    done = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(state.read_text())["done_rows"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 10:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "extraction ended before it could be killed"
    assert not out.exists()
    total = sum(1 for _ in demo.patches.rglob("*.png"))
    assert 10 <= done < total

    resumed = subprocess.run(
        extract_command(demo.root, out, "--verbose"), capture_output=True, text=True, check=True
    )
    assert f"resuming extraction into {out} at patch {done}" in resumed.stderr
    unbroken = tmp_path / "unbroken"
    subprocess.run(extract_command(demo.root, unbroken), check=True)

    a, b = FeatureStore.open(out), FeatureStore.open(unbroken)
    assert a.checksum == b.checksum
    assert (out / "features.npy").read_bytes() == (unbroken / "features.npy").read_bytes()
    assert not (tmp_path / "interrupted.partial").exists()
