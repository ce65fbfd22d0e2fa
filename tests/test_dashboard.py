"""``tuner dashboard`` as a person sees it: headless Chromium on a study with every trial state,
and the read-only dashboard refusing every write.

The browser is Debian's ``chromium`` driven by Playwright (no browser download). Screenshots go
to ``test-results/`` beside the tests (or ``$TUNER_TEST_RESULTS``) to be looked at.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def serving(cwd: Path, options: list[str]) -> Iterator[str]:
    """``tuner dashboard OPTIONS`` as a process; yields its address once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", "--port", str(port), *options],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
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


@pytest.fixture
def dashboard(study_storage: tuple[str, str], tmp_path: Path) -> Iterator[str]:
    """``tuner dashboard`` on the study; yields its address once it answers."""
    backend, url = study_storage
    with serving(tmp_path, ["--storage", url] if backend == "postgres" else []) as address:
        yield address


def launch_chromium(playwright: Any) -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a busy 2-core machine renders slowly
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_dashboard_shows_the_study_in_a_real_browser(
    dashboard: str, study_storage: tuple[str, str]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    backend, url = study_storage
    study = optuna.load_study(study_name="mil", storage=open_storage(url))
    RESULTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)

        # The study list: our study, minimising.
        page.goto(dashboard)
        expect(page.get_by_text("1. mil")).to_be_visible()
        expect(page.get_by_text("Direction: MINIMIZE")).to_be_visible()

        # The study page: the best trial and its value, and the plots drawn.
        page.get_by_text("1. mil").click()
        expect(page.get_by_text(f"Best Trial (number={study.best_trial.number})")).to_be_visible()
        best_value = page.get_by_role("heading", name=f"{study.best_value:g}", exact=True)
        expect(best_value).to_be_visible()
        # the objective by the name tuner gives it, not Optuna's "Objective 0"
        expect(page.get_by_text("val_loss").first).to_be_visible()
        expect(page.get_by_text("Objective 0")).to_have_count(0)
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


@pytest.fixture
def read_only_dashboard(store: FeatureStore, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``tuner dashboard --read-only`` on a Postgres study (tuner names its objective)."""
    with fresh_database() as url:
        storage = open_storage(url)
        create_study(storage, "mil", store.path, space=QUICK, trials=8, pruner="asha")
        study = optuna.load_study(study_name="mil", storage=storage)
        fill(study)
        with serving(tmp_path, ["--storage", url, "--read-only"]) as address:
            yield address, url


FETCH = """async ([method, path, body]) => {
    const headers = {"Content-Type": "application/json"};
    const response = await fetch(path, {method, body, headers});
    return [response.status, response.headers.get("Allow")];
}"""


def test_read_only_dashboard_renders_the_study_and_refuses_every_write(
    read_only_dashboard: tuple[str, str],
) -> None:
    from playwright.sync_api import expect, sync_playwright

    address, url = read_only_dashboard
    study = optuna.load_study(study_name="mil", storage=open_storage(url))

    def snapshot() -> Any:
        storage = open_storage(url)
        (summary,) = optuna.get_all_study_summaries(storage)  # no study added, none deleted
        study_id = storage.get_study_id_from_name("mil")
        trials = [
            (t.number, t.state, t.value, t.system_attrs) for t in storage.get_all_trials(study_id)
        ]
        return summary.study_name, storage.get_study_system_attrs(study_id), trials  # notes too

    before = snapshot()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(address)
        expect(page.get_by_text("1. mil")).to_be_visible()
        page.get_by_text("1. mil").click()
        expect(page.get_by_text(f"Best Trial (number={study.best_trial.number})")).to_be_visible()
        expect(page.get_by_text("val_loss").first).to_be_visible()  # the objective's name
        expect(page.get_by_text("Objective 0")).to_have_count(0)
        expect(page.locator(".js-plotly-plot").first.locator("svg.main-svg").first).to_be_visible()
        page.screenshot(path=RESULTS / "dashboard-read-only-study.png", full_page=True)

        # The writes the dashboard's own buttons send, from the page, as a browser sends them.
        study_id = study._study_id
        trial_id = study.trials[0]._trial_id
        note = json.dumps({"version": 1, "body": "changed"})
        writes = [
            ("DELETE", f"/api/studies/{study_id}", None),
            ("PUT", f"/api/studies/{study_id}/note", note),
            ("PUT", f"/api/studies/{study_id}/{trial_id}/note", note),
            ("POST", f"/api/trials/{trial_id}/tell", json.dumps({"state": "Fail"})),
            ("POST", f"/api/studies/{study_id}/rename", json.dumps({"study_name": "other"})),
            (
                "POST",
                "/api/studies",
                json.dumps({"study_name": "new", "directions": ["minimize"]}),
            ),
        ]
        for method, path, body in writes:
            status, allow = page.evaluate(FETCH, [method, path, body])
            assert (status, allow) == (405, "GET, HEAD"), (method, path)
        assert page.evaluate(FETCH, ["GET", "/api/studies", None])[0] == 200

        page.goto(address)
        expect(page.get_by_text("1. mil")).to_be_visible()
        browser.close()

    assert snapshot() == before
