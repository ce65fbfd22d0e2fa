"""``tuner report``: one self-contained HTML file whose numbers match the study."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.features import FeatureStore
from tuner.report import write_report
from tuner.storage import open_storage
from tuner.study import create_study

QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml"
DISTRIBUTIONS = {
    "train.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "model.dropout": FloatDistribution(0.0, 0.5),
    "regularization.penalty": CategoricalDistribution(["none", "entropy"]),
}


def fill(study: optuna.Study) -> None:
    """Complete, pruned and failed trials, with epochs reported."""
    for i in range(8):
        lr, value = 10 ** (-4 + i / 4), 0.2 + abs(i - 4) / 10
        curve = {e: value + 0.5 / e for e in range(1, 7)}
        params = {"train.lr": lr, "model.dropout": 0.05 * i, "regularization.penalty": "none"}
        state = (
            TrialState.PRUNED
            if i in (1, 7)
            else TrialState.FAIL
            if i == 6
            else TrialState.COMPLETE
        )
        study.add_trial(
            create_trial(
                state=state, params=params, distributions=DISTRIBUTIONS,
                value=value if state == TrialState.COMPLETE else None,
                intermediate_values=curve if state != TrialState.PRUNED else {1: 2.0, 2: 1.9},
                user_attrs={"val_auc": 1 - value / 2, "worker": f"gpu-box-{i % 2}:10{i}",
                            "device": "cuda:0", "best_epoch": 6, "epochs_run": 6,
                            **({"fail_reason": "training diverged at epoch 3"} if i == 6 else {})},
            )
        )  # fmt: skip


@pytest.fixture
def study_db(tmp_path: Path, store: FeatureStore) -> str:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    storage = open_storage(url)
    create_study(storage, "mil", store.path, space=QUICK, trials=8, pruner="asha")
    fill(optuna.load_study(study_name="mil", storage=storage))
    return url


def test_report_is_self_contained_and_matches_the_study(study_db: str, tmp_path: Path) -> None:
    storage = open_storage(study_db)
    summary = write_report(
        storage, "mil", tmp_path / "r.html", storage_url=study_db, png=tmp_path / "png"
    )
    text = (tmp_path / "r.html").read_text()
    assert not re.search(r"<script[^>]+src=", text), "no script is fetched from elsewhere"
    assert "Plotly" in text
    titles = ["Optimisation history", "Timeline", "Intermediate values", "Parameter importances",
              "Parallel coordinates", "Slice: train.lr", "Search space", "Best trials",
              "Failed trials"]  # fmt: skip
    for title in titles:
        assert title in text, title
    study = optuna.load_study(study_name="mil", storage=storage)
    assert f"Best: trial {study.best_trial.number}, validation loss {study.best_value:.4f}" in text
    assert "Trials finished</th><td>8 of 8" in text
    assert "training diverged at epoch 3" in text
    assert "8 on 2 host(s): gpu-box-0, gpu-box-1" in text
    assert "asha" in text
    assert len(summary.pngs) == len(summary.plots)
    assert all(p.stat().st_size > 10_000 for p in summary.pngs)
    assert "Slice: regularization.entropy.patch" in summary.skipped


def test_report_of_an_empty_study_says_what_is_missing(
    tmp_path: Path, store: FeatureStore
) -> None:
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create_study(open_storage(url), "empty", store.path, space=QUICK, trials=3)
    summary = write_report(open_storage(url), "empty", tmp_path / "r.html", storage_url=url)
    text = (tmp_path / "r.html").read_text()
    assert "No complete trial yet" in text
    assert summary.skipped["Optimisation history"] == "no complete trial yet"


def test_report_names_the_study_and_the_objective_and_embeds_plotly_once(
    tmp_path: Path, store: FeatureStore
) -> None:
    """The export command with the study's name as a shell reads it, axes titled with the
    metric on a log scale, and plotly.js once, compressed (the old page weighed 4.9 MB)."""
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create_study(open_storage(url), "my study", store.path, space=QUICK, trials=8)
    study = optuna.load_study(study_name="my study", storage=open_storage(url))
    assert study.metric_names == ["val_loss"]
    fill(study)
    write_report(open_storage(url), "my study", tmp_path / "r.html", storage_url=url)
    text = (tmp_path / "r.html").read_text()
    assert "STUDY" not in text
    assert "Export it with <code>tuner export &#x27;my study&#x27; --out best.yaml</code>" in text
    assert text.count("id='plotly-gzip'") == 1
    assert text.count("Plotly.newPlot") == 1
    assert "Objective Value" not in text
    assert len(text.encode()) < 2_500_000
    figures = {
        m["target"]: json.loads(m["json"].replace("<\\/", "</"))
        for m in re.finditer(
            r"<script type='application/json' class='figure' data-target='(?P<target>[^']+)'>"
            r"(?P<json>.*?)</script>",
            text,
        )
    }
    titles = re.findall(r"<h2>([^<]+)</h2><div id='(plot-\d+)'>", text)
    layout = {title: figures[target]["layout"] for title, target in titles}
    assert len(layout) == len(figures) >= 6
    for title in ("Optimisation history", "Intermediate values (validation loss per epoch)",
                  "Slice: train.lr"):  # fmt: skip
        assert layout[title]["yaxis"]["title"]["text"] == "validation loss", title
        assert layout[title]["yaxis"]["type"] == "log", title
    assert layout["Intermediate values (validation loss per epoch)"]["xaxis"]["title"] == {
        "text": "epoch"
    }


def test_report_draws_every_plot_and_keeps_wide_tables_in_their_card(
    tmp_path: Path, store: FeatureStore
) -> None:
    """In a real browser: plotly unpacks, every figure is drawn with its axis title, and a
    top-trials table of 30 parameters scrolls inside its card instead of running past it."""
    from playwright.sync_api import sync_playwright

    from tests.test_dashboard import launch_chromium

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    create_study(open_storage(url), "wide", store.path, space=QUICK, trials=8)
    study = optuna.load_study(study_name="wide", storage=open_storage(url))
    fill(study)
    many = {f"model.a_rather_long_parameter_name_{i}": FloatDistribution(0, 1) for i in range(30)}
    for value in (0.15, 0.18):
        study.add_trial(
            create_trial(params=dict.fromkeys(many, 0.123456), distributions=many, value=value)
        )
    write_report(open_storage(url), "wide", tmp_path / "r.html", storage_url=url)
    plots = (tmp_path / "r.html").read_text().count("class='figure'")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((tmp_path / "r.html").as_uri())
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= {plots}",
            timeout=90_000,
        )
        assert errors == []
        history = page.locator(".js-plotly-plot").first
        assert "validation loss" in history.locator("text.ytitle").text_content() or ""
        card = page.locator("section", has=page.get_by_role("heading", name="Best trials"))
        width = card.evaluate(
            "s => [s.getBoundingClientRect().right, s.scrollWidth, s.clientWidth]"
        )
        table = card.locator("table.grid").evaluate("t => t.getBoundingClientRect().width")
        browser.close()
    right, scroll_width, client_width = width
    assert table > client_width, "the table is wider than its card (else this proves nothing)"
    assert scroll_width <= client_width, "the card itself does not overflow"
    assert right <= 1280
