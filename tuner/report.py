"""``tuner report``: a study in one self-contained HTML file (and, optionally, PNG pictures).

The page holds the study's settings and outcome, a table of the best trials and the reasons of
failed ones, and Optuna's interactive plots: optimisation history, timeline (when each trial
ran and how it ended), intermediate values (where pruning cut trials short), parameter
importances, parallel coordinates and a slice plot per parameter. plotly.js is embedded once,
gzip-compressed (a third of its 4.8 MB), and unpacked by the browser (``DecompressionStream``)
before the figures, which are plain JSON, are drawn; so the file opens offline and can be mailed
or archived as is. The objective's axes read its metric name ("validation loss"), on a log
scale, so that the good trials are not squashed onto 0 by a diverged one.
"""

from __future__ import annotations

import base64
import gzip
import html
import logging
import math
import shlex
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

import tuner
from tuner._files import write_atomic
from tuner._format import fmt
from tuner.study import (
    HISTORY_KEY,
    OBJECTIVE_NAME,
    OBJECTIVE_TITLE,
    Budget,
    StudySettings,
    load_settings,
)

__all__ = ["ReportSummary", "write_report"]

logger = logging.getLogger(__name__)

_cell = partial(fmt, pattern="{:.4g}", missing="")
"""A table cell: 4 significant digits, empty for nothing."""

TOP_TRIALS = 10


@dataclass(frozen=True)
class ReportSummary:
    html: Path
    plots: list[str]
    skipped: dict[str, str]
    pngs: list[Path]


def write_report(
    storage: BaseStorage,
    name: str,
    out: Path,
    *,
    storage_url: str,
    png: Path | None = None,
) -> ReportSummary:
    """Write the report of study ``name`` to ``out`` (and its plots as PNG files to ``png``)."""
    settings = load_settings(storage, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    figures, skipped = _figures(study, settings, trials)
    target = objective_title(study)
    body = [
        _header(name, settings, trials, storage_url),
        _settings_section(settings),
        _best_section(name, trials, target),
        *(
            _figure_section(i, title, fig, target, trials)
            for i, (title, fig) in enumerate(figures)
        ),
        _failed_section(trials),
    ]
    if skipped:
        items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in skipped.items())
        body.append(f"<section><h2>Plots left out</h2><ul>{items}</ul></section>")
    write_atomic(out, _page(f"tuner report: {name}", "\n".join(body)))
    pngs = _write_pngs(study, settings, trials, png) if png is not None else []
    return ReportSummary(out, [title for title, _ in figures], skipped, pngs)


def objective_title(study: optuna.Study) -> str:
    """The objective as axes name it: "validation loss" for tuner's ``val_loss`` (and for a
    study from before tuner named it), else the study's own metric name."""
    names = study.metric_names or [OBJECTIVE_NAME]
    return OBJECTIVE_TITLE if names[0] == OBJECTIVE_NAME else names[0]


def _complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE]


def _common_params(trials: list[FrozenTrial]) -> list[str]:
    """Parameters every complete trial has (conditional ones are missing in some)."""
    complete = _complete(trials)
    if not complete:
        return []
    common = set(complete[0].params)
    for t in complete[1:]:
        common &= set(t.params)
    return [p for p in complete[0].params if p in common]


def _plot_makers(
    study: optuna.Study, settings: StudySettings, trials: list[FrozenTrial], backend: Any
) -> list[tuple[str, Callable[[], Any]]]:
    common = _common_params(trials)
    target = objective_title(study)
    makers: list[tuple[str, Callable[[], Any]]] = [
        ("Optimisation history",
         lambda: backend.plot_optimization_history(study, target_name=target)),
        ("Timeline", lambda: backend.plot_timeline(study)),
        (f"Intermediate values ({target} per epoch)",
         lambda: backend.plot_intermediate_values(study)),
        ("Parameter importances", lambda: backend.plot_param_importances(study, params=common)),
        ("Parallel coordinates",
         lambda: backend.plot_parallel_coordinate(study, target_name=target)),
    ]  # fmt: skip
    for param in settings.space:
        makers.append((f"Slice: {param}", partial(_slice, backend, study, param, target)))
    return makers


def _slice(backend: Any, study: optuna.Study, param: str, target: str) -> Any:
    return backend.plot_slice(study, params=[param], target_name=target)


def _on_value_axis(title: str) -> tuple[str, str] | None:
    """Which axis of the plot ``title`` shows the objective (and which the epoch), if any."""
    if title == "Optimisation history" or title.startswith("Slice: "):
        return "y", ""
    if title.startswith("Intermediate"):
        return "y", "x"
    return None


def _value_range(trials: list[FrozenTrial]) -> tuple[bool, tuple[float, float] | None]:
    """Log scale when every value (and reported epoch) is positive; else a linear range clipped
    to the 90th percentile, so that one diverged trial does not squash the others onto 0."""
    values = sorted(
        v
        for t in trials
        for v in [*t.intermediate_values.values(), *([t.value] if t.value is not None else [])]
        if math.isfinite(v)
    )
    if not values or values[0] > 0:
        return True, None
    top = values[min(len(values) - 1, int(0.9 * len(values)))]
    margin = (top - values[0]) * 0.05 or 1.0
    return False, (values[0] - margin, top + margin)


def _figures(
    study: optuna.Study, settings: StudySettings, trials: list[FrozenTrial]
) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    figures, skipped = [], {}
    for title, make in _plot_makers(study, settings, trials, optuna.visualization):
        reason = _why_not(title, trials)
        if reason:
            skipped[title] = reason
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figures.append((title, make()))
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            skipped[title] = str(error) or type(error).__name__
    return figures, skipped


def _why_not(title: str, trials: list[FrozenTrial]) -> str | None:
    complete = _complete(trials)
    if title == "Timeline":
        return None if trials else "no trials yet"
    if title.startswith("Intermediate"):
        return None if any(t.intermediate_values for t in trials) else "no epoch was reported yet"
    if not complete:
        return "no complete trial yet"
    if title == "Parameter importances" and (len(complete) < 2 or not _common_params(trials)):
        return "needs two complete trials with parameters in common"
    if title.startswith("Slice: "):
        name = title.removeprefix("Slice: ")
        if not any(name in t.params for t in complete):
            return "no complete trial sampled it"
    return None


def _write_pngs(
    study: optuna.Study, settings: StudySettings, trials: list[FrozenTrial], folder: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as backend

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for title, make in _plot_makers(study, settings, trials, backend):
        if _why_not(title, trials):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = make()
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        axes = result.flat[0] if hasattr(result, "flat") else result
        axis = _on_value_axis(title)
        if axis is not None:
            log, limits = _value_range(trials)
            axes.set_ylabel(objective_title(study))
            if axis[1]:
                axes.set_xlabel("epoch")
            if log:
                axes.set_yscale("log")
            elif limits is not None:
                axes.set_ylim(*limits)
        figure = axes.get_figure()
        figure.set_size_inches(8, 5)
        path = folder / f"{_slug(title)}.png"
        figure.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


def _slug(title: str) -> str:
    keep = "".join(c if c.isalnum() else "-" for c in title.lower())
    return "-".join(filter(None, keep.split("-")))


def _header(name: str, settings: StudySettings, trials: list[FrozenTrial], url: str) -> str:
    states = Counter(t.state.name.lower() for t in trials)
    budget = Budget.count(trials, settings.budget, max_retries=settings.max_retries)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = _duration(max(ends) - min(starts)) if starts and ends else "n/a"
    workers = sorted({str(t.user_attrs["worker"]) for t in trials if "worker" in t.user_attrs})
    hosts = sorted({w.rsplit(":", 1)[0] for w in workers})
    devices = sorted({str(t.user_attrs["device"]) for t in trials if "device" in t.user_attrs})
    rows = [
        ("Trials finished", f"{budget.done} of {settings.budget}"),
        ("By state", ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"),
        ("Wall time", wall),
        ("Workers seen", f"{len(workers)} on {len(hosts)} host(s): {', '.join(hosts) or 'none'}"),
        ("Devices", ", ".join(devices) or "n/a"),
        ("Storage", url),
        ("Created", settings.created),
    ]
    return (
        f"<header><h1>Study {html.escape(name)}</h1>"
        f"<p class='sub'>tuner {tuner.__version__}, report written "
        f"{datetime.now():%Y-%m-%d %H:%M}</p>{_table(rows)}</header>"
    )


def _settings_section(settings: StudySettings) -> str:
    base = settings.base_config
    rows = [
        ("Sampler", settings.sampler),
        ("Pruner", settings.pruner),
        ("Budget", str(settings.budget)),
        ("Seed", str(settings.seed)),
        ("Epochs at most", str(base["train"]["epochs"])),
        ("Model", ", ".join(f"{k} {v}" for k, v in base["model"].items())),
        (
            "Feature store",
            f"{settings.features['path']} ({settings.features['checksum'][:19]}...)",
        ),
        ("Checkpoints", settings.checkpoints or "none"),
    ]
    space_rows = []
    for key, spec in settings.space.items():
        if spec["type"] == "categorical":
            domain = ", ".join(map(str, spec["choices"]))
        else:
            domain = f"{spec['low']:g} .. {spec['high']:g}" + (" (log)" if spec.get("log") else "")
            if spec.get("step"):
                domain += f", step {spec['step']:g}"
        when = ", ".join(f"{k} = {'/'.join(map(str, v))}" for k, v in spec.get("when", {}).items())
        space_rows.append((key, spec["type"], domain, when))
    space = _grid(["parameter", "type", "range", "only when"], space_rows)
    return f"<section><h2>Settings</h2>{_table(rows)}<h3>Search space</h3>{space}</section>"


def _best_section(name: str, trials: list[FrozenTrial], target: str) -> str:
    complete = sorted(_complete(trials), key=lambda t: float(t.value or 0.0))[:TOP_TRIALS]
    if not complete:
        return "<section><h2>Best trials</h2><p>No complete trial yet.</p></section>"
    params = list(dict.fromkeys(p for t in complete for p in t.params))
    rows = [
        (
            str(t.number), f"{t.value:.4f}", _cell(t.user_attrs.get("val_auc")),
            str(t.user_attrs.get("best_epoch", "")), str(t.user_attrs.get("epochs_run", "")),
            fmt(t.user_attrs.get("duration_s"), "{:.0f} s", missing=""),
            *(_cell(t.params.get(p)) for p in params),
        )
        for t in complete
    ]  # fmt: skip
    header = ["trial", target, "val AUC", "best epoch", "epochs", "duration", *params]
    best = complete[0]
    auc = best.user_attrs.get("val_auc")
    export = shlex.join(["tuner", "export", name, "--out", "best.yaml"])
    lead = (
        f"<p class='best'>Best: trial {best.number}, {html.escape(target)} {best.value:.4f}"
        + (f", AUC {fmt(auc)}" if auc is not None else "")
        + f". Export it with <code>{html.escape(export)}</code>.</p>"
    )
    return f"<section><h2>Best trials</h2>{lead}{_grid(header, rows)}</section>"


def _failed_section(trials: list[FrozenTrial]) -> str:
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed:
        return ""
    retried_by: dict[int, list[int]] = {}
    for t in trials:
        history = t.system_attrs.get(HISTORY_KEY) or []
        if history:
            retried_by.setdefault(int(history[-1]), []).append(t.number)
    rows = [
        (
            str(t.number),
            str(t.user_attrs.get("fail_reason", "its worker died (heartbeat stopped)")),
            ", ".join(map(str, retried_by.get(t.number, []))),
        )
        for t in failed
    ]
    return (
        f"<section><h2>Failed trials</h2>{_grid(['trial', 'reason', 'retried as'], rows)}"
        "</section>"
    )


def _figure_section(
    number: int, title: str, figure: Any, target: str, trials: list[FrozenTrial]
) -> str:
    """A plot as a placeholder and its figure as JSON, drawn once plotly.js is unpacked."""
    figure.update_layout(template="plotly_white", height=460, margin={"t": 30}, title=None)
    axis = _on_value_axis(title)
    if axis is not None:
        log, limits = _value_range(trials)
        value_axis: dict[str, Any] = {"title": {"text": target}}
        if log:
            value_axis["type"] = "log"
        elif limits is not None:
            value_axis["range"] = list(limits)
        figure.update_layout({f"{axis[0]}axis": value_axis})
        if axis[1]:
            figure.update_layout({f"{axis[1]}axis": {"title": {"text": "epoch"}}})
    # "</" inside a <script> would end it early; "<\/" is the same JSON string
    data = figure.to_json().replace("</", "<\\/")
    return (
        f"<section class='plot'><h2>{html.escape(title)}</h2><div id='plot-{number}'></div>"
        f"<script type='application/json' class='figure' data-target='plot-{number}'>{data}"
        "</script></section>"
    )


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    return f"<table class='kv'>{cells}</table>"


def _grid(header: list[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f"<div class='scroll'><table class='grid'><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def _duration(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1d2430; margin: 0; background: #f5f6f8; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
header, section { background: white; border-radius: 8px; padding: 18px 22px; margin: 0 0 18px;
                  box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h1 { margin: 0 0 4px; font-size: 26px; } h2 { margin: 0 0 12px; font-size: 19px; }
h3 { font-size: 16px; margin: 16px 0 8px; } .sub { color: #667; margin: 0 0 12px; }
.best { font-size: 16px; }
table { border-collapse: collapse; font-size: 14px; }
.scroll { overflow-x: auto; max-width: 100%; }
table.kv th { text-align: left; padding: 3px 18px 3px 0; color: #556; font-weight: 600; }
table.grid { width: 100%; } table.grid th, table.grid td { padding: 5px 8px;
  border-bottom: 1px solid #e4e7ec; text-align: left; white-space: nowrap; }
table.grid td { font-variant-numeric: tabular-nums; }
table.grid thead th { background: #eef1f5; } code { background: #eef1f5; padding: 1px 4px; }
"""


_DRAW = """
(async () => {
  const packed = document.getElementById("plotly-gzip").textContent;
  const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  (0, eval)(await new Response(stream).text());
  for (const figure of document.querySelectorAll("script.figure")) {
    const { data, layout } = JSON.parse(figure.textContent);
    Plotly.newPlot(figure.dataset.target, data, layout, { displaylogo: false, responsive: true });
  }
})();
"""


def _page(title: str, body: str) -> str:
    """The page, with plotly.js once, gzip-compressed and base64-encoded (1.96 MB of 4.8)."""
    from plotly.offline import get_plotlyjs

    packed = base64.b64encode(gzip.compress(get_plotlyjs().encode(), mtime=0)).decode()
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<main>{body}</main><script type='application/octet-stream' id='plotly-gzip'>{packed}"
        f"</script><script>{_DRAW}</script></body></html>"
    )
