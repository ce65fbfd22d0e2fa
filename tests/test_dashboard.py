"""``tuner dashboard`` as a person sees it: headless Chromium on a study with every trial state.

The browser is Debian's ``chromium`` driven by Playwright (no browser download). Screenshots go
to ``test-results/`` beside the tests (or ``$TUNER_TEST_RESULTS``) to be looked at.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.pg import fresh_database
from tests.test_report import QUICK, fill
from tuner.features import FeatureStore
from tuner.storage import open_storage
from tuner.study import create_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
RESULTS = Path(os.environ.get("TUNER_TEST_RESULTS", Path(__file__).parents[1] / "test-results"))
# Headless in a container: no sandbox (root), no GPU, no calls home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(params=["postgres", "embedded"])
def study_storage(
    request: pytest.FixtureRequest, store: FeatureStore, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """A study "mil" with complete, pruned and failed trials; yields (backend, storage URL).

    The embedded case relies on the default: the dashboard runs in ``tmp_path`` with no
    ``--storage`` and finds ``storage/tuner.db`` there.
    """
    with fresh_database() as pg_url:
        url = pg_url if request.param == "postgres" else f"sqlite:///{tmp_path}/storage/tuner.db"
        (tmp_path / "storage").mkdir()
        storage = open_storage(url)
        create_study(storage, "mil", store.path, space=QUICK, trials=8, pruner="asha")
        fill(optuna.load_study(study_name="mil", storage=storage))
        yield request.param, url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def dashboard(study_storage: tuple[str, str], tmp_path: Path) -> Iterator[str]:
    """``tuner dashboard`` as a process; yields its address once it answers."""
    backend, url = study_storage
    port = free_port()
    storage = ["--storage", url] if backend == "postgres" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", "--port", str(port), *storage],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}/dashboard/"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                urllib.request.urlopen(address, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_dashboard_shows_the_study_in_a_real_browser(
    dashboard: str, study_storage: tuple[str, str]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    backend, url = study_storage
    study = optuna.load_study(study_name="mil", storage=open_storage(url))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # a busy 2-core machine renders slowly

        # The study list: our study, minimising.
        page.goto(dashboard)
        expect(page.get_by_text("1. mil")).to_be_visible()
        expect(page.get_by_text("Direction: MINIMIZE")).to_be_visible()

        # The study page: the best trial and its value, and the plots drawn.
        page.get_by_text("1. mil").click()
        expect(page.get_by_text(f"Best Trial (number={study.best_trial.number})")).to_be_visible()
        best_value = page.get_by_role("heading", name=f"{study.best_value:g}", exact=True)
        expect(best_value).to_be_visible()
        history = page.locator(".js-plotly-plot").first
        expect(history.locator("svg.main-svg").first).to_be_visible()
        points = history.locator("path.point")
        expect(points.first).to_be_attached()
        completed = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        assert points.count() >= len(completed)
        expect(page.get_by_text("Intermediate values")).to_be_visible()
        page.screenshot(path=RESULTS / f"dashboard-{backend}-study.png", full_page=True)

        # The trial list: every trial, pruned and failed ones among them.
        page.goto(page.url.rstrip("/") + "/trials")
        expect(page.get_by_text(f"{len(study.trials)} Trials")).to_be_visible()
        expect(page.get_by_text("Pruned").first).to_be_visible()
        expect(page.get_by_text("Fail", exact=True).first).to_be_visible()
        page.screenshot(path=RESULTS / f"dashboard-{backend}-trials.png")
        browser.close()

    for name in ("study", "trials"):
        assert (RESULTS / f"dashboard-{backend}-{name}.png").stat().st_size > 20_000
