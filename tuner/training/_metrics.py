"""Classification metrics of a split, from scikit-learn, and a bootstrap interval of the AUC.

A test set of 20 cases gives an AUC that can swing by 0.2 from one draw of cases to another;
:func:`auc_interval` says how far, so that a printed AUC comes with its uncertainty.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np

__all__ = [
    "EpochCallback",
    "EpochReport",
    "Metrics",
    "auc_interval",
    "chance_loss",
    "classification_metrics",
    "with_auc_interval",
]


@dataclass(frozen=True)
class Metrics:
    """Loss (class-weighted cross-entropy), AUC (None with one class), accuracies.

    ``auc_ci`` is the 95 % bootstrap interval of the AUC (:func:`auc_interval`), computed
    where metrics are reported (test sets, external cohorts), not every epoch.
    """

    loss: float
    auc: float | None
    balanced_accuracy: float
    accuracy: float
    n_cases: int
    auc_ci: tuple[float, float] | None = None

    def auc_text(self) -> str:
        """``0.812 (95 % CI 0.70-0.91)``, or ``n/a`` without an AUC."""
        if self.auc is None:
            return "n/a"
        if self.auc_ci is None:
            return f"{self.auc:.3f}"
        return f"{self.auc:.3f} (95 % CI {self.auc_ci[0]:.2f}-{self.auc_ci[1]:.2f})"

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class EpochReport:
    """What one epoch did; ``epoch`` counts from 1."""

    epoch: int
    train_loss: float
    train_penalty: float
    val: Metrics
    lr: float
    seconds: float


EpochCallback = Callable[[EpochReport], None]


def classification_metrics(probs: np.ndarray, labels: np.ndarray, loss: float) -> Metrics:
    """Metrics of predicted class probabilities ``(n, n_classes)`` against labels ``(n,)``."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    predictions = probs.argmax(axis=1)
    auc: float | None = None
    if len(np.unique(labels)) > 1:
        if probs.shape[1] == 2:
            auc = float(roc_auc_score(labels, probs[:, 1]))
        else:
            auc = float(
                roc_auc_score(labels, probs, multi_class="ovr", labels=np.arange(probs.shape[1]))
            )
    with warnings.catch_warnings():  # one case, or one class present: still well defined
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predictions))
    return Metrics(
        loss=float(loss) if math.isfinite(loss) else float("nan"),
        auc=auc,
        balanced_accuracy=balanced,
        accuracy=float(accuracy_score(labels, predictions)),
        n_cases=len(labels),
    )


def auc_interval(
    probs: np.ndarray, labels: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """The 95 % percentile bootstrap interval of the (one-vs-rest macro) AUC.

    Cases are resampled with replacement within each class (a label-stratified bootstrap),
    so every resample has the class counts of the original and a defined AUC. None when a
    class has fewer than two cases.
    """
    labels = np.asarray(labels)
    classes = np.arange(probs.shape[1])
    members = [np.flatnonzero(labels == c) for c in classes]
    if any(len(m) < 2 for m in members):
        return None
    rng = np.random.default_rng(seed)
    drawn = np.concatenate(
        [m[rng.integers(0, len(m), size=(resamples, len(m)))] for m in members], axis=1
    )  # (resamples, n): the same class counts in every resample
    y = labels[drawn]
    scored = classes[1:] if len(classes) == 2 else classes
    aucs = np.mean([_rank_auc(probs[drawn, c], y == c) for c in scored], axis=0)
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def with_auc_interval(metrics: Metrics, probs: np.ndarray, labels: np.ndarray) -> Metrics:
    """``metrics`` with the bootstrap interval of its AUC filled in."""
    return replace(metrics, auc_ci=auc_interval(probs, labels))


def _rank_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row of ``scores`` (ties count a half); rows are resamples."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=1)
    result: np.ndarray = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return result


def chance_loss(labels: np.ndarray, class_weights: np.ndarray) -> float:
    """The validation loss of the best constant prediction: what a model that learned nothing
    scores.

    The validation loss is cross-entropy weighted by class (``class_weights``, from the
    training cases), averaged over the weight: with ``a_c`` the share of class ``c`` in the
    weighted counts, a constant prediction ``p`` scores ``-sum a_c log p_c``, least at
    ``p = a``, where it is the entropy of ``a`` (ln 2 = 0.693 for two balanced classes).
    """
    counts = np.bincount(np.asarray(labels), minlength=len(class_weights)).astype(np.float64)
    mass = counts * np.asarray(class_weights, dtype=np.float64)
    share = mass[mass > 0] / mass.sum()
    return float(-(share * np.log(share)).sum())
