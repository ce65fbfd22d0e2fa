"""The trivial-objective worker of the orchestration benchmarks: ``tests/trivial_worker.py``.

It lives with the tests (which must not depend on this folder); this entry point keeps the
benchmarks' command lines as they were:

    python benchmarks/trivial_worker.py STUDY --storage URL [--sleep 0.0] [--max-trials N]
        [--start-file PATH]
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(
        str(Path(__file__).resolve().parents[1] / "tests" / "trivial_worker.py"),
        run_name="__main__",
    )
