"""The run folder's pictures: confusion matrix and ROC curve (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_confusion_matrix", "plot_roc"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, classes: tuple[str, ...], path: Path
) -> None:
    """Counts of true (rows) against predicted (columns) classes, annotated in each cell."""
    plt = _pyplot()
    n = len(classes)
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, predictions), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * n, 1.2 + 1.2 * n), dpi=120)
    ax.imshow(matrix, cmap="Blues", vmin=0)
    for i in range(n):
        for j in range(n):
            dark = matrix[i, j] > matrix.max() / 2
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if dark else "black", fontsize=13)  # fmt: skip
    ax.set_xticks(range(n), classes, rotation=30, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Test cases (n={len(labels)})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(labels: np.ndarray, probs: np.ndarray, classes: tuple[str, ...], path: Path) -> None:
    """ROC of the positive class (binary) or of each class against the rest."""
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=120)
    targets = [1] if len(classes) == 2 else range(len(classes))
    for cls in targets:
        positive = labels == cls
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, cls])
        ax.plot(fpr, tpr, lw=2, label=f"{classes[cls]} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, test cases")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
