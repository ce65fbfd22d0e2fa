"""``tuner explain``: where a trained model looks.

For one case of a run: a picture per stain and slice, each patch shaded by its effective
attention (patch weight x slice weight x stain weight, so all patches of the case share one
scale), drawn on the patch images when they are still where extraction found them, in a grid in
the store's order (the picture says so: patch files do not record where they lie); bar charts
of the slice- and stain-level attention; and a summary (label, prediction, probability).

For a whole run: how the slice-level attention of misclassified test cases is distributed,
next to the correctly classified ones (a model that is wrong often attends diffusely, or to
the wrong slice with confidence), each misclassified case named beside its point.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuner.config import load_config
from tuner.data import Patch, load_splits, natural_key
from tuner.errors import ExplainError
from tuner.features import FeatureStore
from tuner.training import CaseSampler, StoreTensors, Trainer

__all__ = ["CaseExplanation", "explain_case", "explain_run"]

TILE = 64
GRID_NOTE = (
    "patches in a grid in the store's order, not where they lie in the tissue "
    "(the patch files do not record their position)"
)


@dataclass
class CaseExplanation:
    case: str
    label: str
    prediction: str
    probabilities: dict[str, float]
    fold: int
    pictures: list[Path]
    rows: list[Patch]
    attention: np.ndarray  # (n_patches, 3): patch, slice, stain weight

    @property
    def effective(self) -> np.ndarray:
        result: np.ndarray = self.attention.prod(axis=1)
        return result

    def summary(self) -> dict[str, Any]:
        order = np.argsort(-self.effective)[:5]
        return {
            "case": self.case,
            "label": self.label,
            "prediction": self.prediction,
            "probabilities": self.probabilities,
            "model_fold": self.fold,
            "top_patches": [
                {"path": self.rows[i].path, "attention": round(float(self.effective[i]), 5)}
                for i in order
            ],
            "pictures": [p.name for p in self.pictures],
        }


def _load_run(run: Path) -> tuple[Any, dict[str, Any], FeatureStore]:
    if not (run / "model.pt").is_file() or not (run / "config.yaml").is_file():
        raise ExplainError(
            f"{str(run)!r} is not a run folder of 'tuner train' (no model.pt / config.yaml)"
        )
    config = load_config(run / "config.yaml")
    saved = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    store = FeatureStore.open(
        config.data.features,
        checksum=saved["store_checksum"],
        expected_by=f"run {str(run)!r} was trained on",
    )
    return config, saved, store


def explain_case(run: Path, case: str, out: Path | None = None) -> CaseExplanation:
    """Attention pictures and a summary of ``case`` under the model of run folder ``run``."""
    config, saved, store = _load_run(run)
    store.case(case)  # a clear error for an unknown case
    fold = _fold_of(run, case)
    device = torch.device("cpu")
    trainer = Trainer(config, StoreTensors.load(store, device), device)
    model = trainer.new_model()
    model.load_state_dict(saved["folds"][fold])
    sampler = CaseSampler(trainer.data, [case], batch_cases=1)
    evaluation = trainer.evaluate(model, sampler, torch.ones(len(store.classes)), attention=True)
    assert evaluation.rows is not None
    assert evaluation.attention is not None
    probs = evaluation.probs[0]
    explanation = CaseExplanation(
        case=case,
        label=store.classes[int(evaluation.labels[0])],
        prediction=store.classes[int(probs.argmax())],
        probabilities={c: round(float(p), 5) for c, p in zip(store.classes, probs, strict=True)},
        fold=fold,
        pictures=[],
        rows=[store.rows[int(r)] for r in evaluation.rows],
        attention=evaluation.attention,
    )
    folder = out or run / "explain" / case
    folder.mkdir(parents=True, exist_ok=True)
    explanation.pictures = _draw_case(explanation, store, folder)
    (folder / "summary.json").write_text(json.dumps(explanation.summary(), indent=2) + "\n")
    return explanation


def _fold_of(run: Path, case: str) -> int:
    """The fold whose test split holds the case (its unbiased model); fold 0 otherwise."""
    splits = load_splits(run / "splits.json")
    for number, split in enumerate(splits.splits):
        if case in split.test:
            return number
    return 0


def _draw_case(ex: CaseExplanation, store: FeatureStore, folder: Path) -> list[Path]:
    plt = _pyplot()
    root = _image_root(store)
    effective = ex.effective
    scale = float(effective.max()) or 1.0
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(ex.rows):
        groups[(row.stain, row.slice)].append(i)
    pictures = []
    for (stain, slice_), members in sorted(
        groups.items(), key=lambda kv: (natural_key(kv[0][0]), natural_key(kv[0][1]))
    ):
        canvas = _mosaic(ex, members, effective / scale, root)
        size = (max(5.5, canvas.shape[1] / 100 + 1.5), max(3.2, canvas.shape[0] / 100 + 0.8))
        fig, ax = plt.subplots(figsize=size)
        ax.imshow(canvas)
        ax.set_axis_off()
        first = members[0]
        ax.set_title(
            f"{ex.case} {stain} slice {slice_}\nslice weight {ex.attention[first, 1]:.2f} "
            f"in the stain, stain weight {ex.attention[first, 2]:.2f} in the case",
            fontsize=9,
        )
        mappable = plt.cm.ScalarMappable(cmap="inferno", norm=plt.Normalize(0, scale))
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02, label="effective attention")
        ax.text(
            0.5, -0.02, GRID_NOTE, transform=ax.transAxes, ha="center", va="top", fontsize=8,
            color="#555555", wrap=True,
        )  # fmt: skip
        path = folder / f"{_safe(stain)}_slice-{_safe(slice_)}.png"
        _save(fig, path, bbox_inches="tight")
        plt.close(fig)
        pictures.append(path)
    pictures.append(_draw_bars(ex, folder))
    return pictures


def _mosaic(
    ex: CaseExplanation, members: list[int], level: np.ndarray, root: Path | None
) -> np.ndarray:
    """RGB grid of the slice's patches, each darkened by (1 - attention) and framed in colour."""
    import matplotlib

    cmap = matplotlib.colormaps["inferno"]
    columns = max(1, math.ceil(math.sqrt(len(members))))
    rows = math.ceil(len(members) / columns)
    pad = 6
    canvas = np.ones((rows * (TILE + pad) + pad, columns * (TILE + pad) + pad, 3))
    for k, i in enumerate(members):
        y, x = pad + (k // columns) * (TILE + pad), pad + (k % columns) * (TILE + pad)
        tile = _tile(root, ex.rows[i].path)
        value = float(level[i])
        frame = np.array(cmap(value)[:3])
        canvas[y - 3 : y + TILE + 3, x - 3 : x + TILE + 3] = frame
        canvas[y : y + TILE, x : x + TILE] = tile * (0.25 + 0.75 * value)
    return canvas


def _tile(root: Path | None, relative: str) -> np.ndarray:
    from PIL import Image

    if root is not None:
        try:
            with Image.open(root / relative) as image:
                small = image.convert("RGB").resize((TILE, TILE))
                return np.asarray(small, dtype=float) / 255
        except OSError:
            pass
    return np.full((TILE, TILE, 3), 0.85)


def _draw_bars(ex: CaseExplanation, folder: Path) -> Path:
    plt = _pyplot()
    stains: dict[str, float] = {}
    slices: dict[str, float] = {}
    for i, row in enumerate(ex.rows):
        stains[row.stain] = float(ex.attention[i, 2])
        slices[f"{row.stain} {row.slice}"] = float(ex.attention[i, 1] * ex.attention[i, 2])
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, max(2, len(slices) / 3)]}
    )
    left.bar(list(stains), list(stains.values()), color="#4c72b0")
    left.set_title("stain attention (in the case)")
    left.set_ylim(0, 1)
    right.bar(list(slices), list(slices.values()), color="#dd8452")
    right.set_title("slice attention x stain attention")
    right.tick_params(axis="x", rotation=60)
    probability = ex.probabilities[ex.prediction]
    fig.suptitle(
        f"case {ex.case}: label {ex.label}, predicted {ex.prediction} (p={probability:.2f})",
        fontsize=11,
    )
    fig.tight_layout()
    path = folder / "attention_bars.png"
    _save(fig, path)
    plt.close(fig)
    return path


def explain_run(run: Path, out: Path | None = None) -> dict[str, Any]:
    """Slice-level attention of misclassified test cases against correctly classified ones."""
    predictions = _read(run / "predictions.csv")
    attention = _read(run / "attention.csv")
    wrong = {p["case"] for p in predictions if p["label"] != p["prediction"]}
    per_case: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for row in attention:
        weight = float(row["slice_weight"]) * float(row["stain_weight"])
        per_case[row["case"]][(row["stain"], row["slice"])] = weight
    stats = {case: _concentration(list(w.values())) for case, w in per_case.items()}
    folder = out or run / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    path = _draw_run(stats, wrong, folder)
    summary = {
        "cases": len(stats),
        "misclassified": sorted(wrong, key=natural_key),
        "top_slice_weight": {
            group: _median(
                [stats[c]["top"] for c in stats if (c in wrong) == (group == "misclassified")]
            )
            for group in ("misclassified", "correct")
        },
        "picture": path.name,
    }
    (folder / "run_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _concentration(weights: list[float]) -> dict[str, float]:
    w = np.array(weights) / max(sum(weights), 1e-12)
    entropy = float(-(w * np.log(np.clip(w, 1e-12, None))).sum())
    return {
        "top": float(w.max()),
        "entropy": entropy / math.log(len(w)) if len(w) > 1 else 0.0,
        "slices": float(len(w)),
    }


def _draw_run(stats: dict[str, dict[str, float]], wrong: set[str], folder: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in (
        (left, "top", "largest slice weight of the case"),
        (right, "entropy", "normalised entropy of slice weights"),
    ):
        names = [
            sorted((c for c in stats if c not in wrong), key=natural_key),
            sorted((c for c in stats if c in wrong), key=natural_key),
        ]
        groups = [[stats[c][key] for c in group] for group in names]
        ax.boxplot([g or [math.nan] for g in groups], widths=0.5)
        for x, (values, cases) in enumerate(zip(groups, names, strict=True), start=1):
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(values))
            colour = "#c44e52" if x == 2 else "#4c72b0"
            ax.scatter(x + jitter, values, s=18, alpha=0.7, color=colour)
            if x == 2:  # the misclassified cases by name, to look at with --case
                for case, dx, value in zip(cases, jitter, values, strict=True):
                    ax.annotate(
                        case, (x + dx, value), xytext=(5, 0), textcoords="offset points",
                        fontsize=7, va="center", color=colour,
                    )  # fmt: skip
        ax.set_xticks([1, 2], [f"correct ({len(groups[0])})", f"misclassified ({len(groups[1])})"])
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
    fig.suptitle("Slice-level attention of the test cases", fontsize=11)
    fig.tight_layout()
    path = folder / "misclassified_slice_attention.png"
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig: Any, path: Path, **options: Any) -> None:
    """Save the picture; every text drawn on it also goes into the PNG's ``Description``, so
    that a reader (or a test) gets the words without reading pixels."""
    from matplotlib.text import Text

    texts = [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    fig.savefig(path, dpi=110, metadata={"Description": "\n".join(texts)}, **options)


def _image_root(store: FeatureStore) -> Path | None:
    source = store.manifest.get("source") or {}
    root = source.get("root") if source.get("kind") == "extracted" else None
    return Path(root) if root and Path(root).is_dir() else None


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise ExplainError(f"{str(path)!r} not found; is {str(path.parent)!r} a run folder?")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
