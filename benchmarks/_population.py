"""Scoring a trained model on another cohort's feature store (an independent population).

The model's input standardisation lives in its weights (the projector's ``mean`` and
``scale`` buffers, set from its training cases), so a state dict trained on one store of an
encoder scores the cases of another store of the same encoder as it is; nothing is
recomputed from the population. ``tuner evaluate`` will do this for run folders; until then
the benchmarks use this.

    from _population import Population, evaluate, rescore
    pop = Population.load(population_store)
    result = evaluate(config, fit.state_dict, pop)   # result.metrics: against labels.csv
    rescore(result, true_labels)                     # the same predictions, true labels
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tuner.config import RunConfig
from tuner.features import FeatureStore
from tuner.training import Evaluation, Metrics, StoreTensors, Trainer, classification_metrics


@dataclass
class Population:
    """A store loaded once for scoring many models on all of its cases."""

    store: FeatureStore
    data: StoreTensors
    cases: list[str]

    @classmethod
    def load(cls, store: FeatureStore, device: torch.device | None = None) -> Population:
        device = device or torch.device("cpu")
        return cls(store, StoreTensors.load(store, device), list(store.labels()))


def evaluate(
    config: RunConfig,
    state_dict: dict[str, torch.Tensor],
    pop: Population,
    *,
    weights_from: list[str] | tuple[str, ...] | None = None,
) -> Evaluation:
    """Predictions of the model ``state_dict`` (of ``config``'s architecture) on every case.

    The loss is cross-entropy weighted by 1/frequency of the classes of ``weights_from``
    (cases of the population's store; default: all of them).
    """
    trainer = Trainer(config, pop.data, pop.data.features.device)
    model = trainer.new_model()  # no statistics: the state dict brings the training cases'
    model.load_state_dict(state_dict)
    weights = trainer.class_weights(weights_from or pop.cases)
    return trainer.evaluate(model, trainer.sampler(pop.cases, train=False), weights)


def rescore(evaluation: Evaluation, labels: dict[str, int]) -> Metrics:
    """The metrics of the same predictions against other labels (e.g. the true ones), with the
    loss weighted by those labels' class frequencies."""
    y = np.array([labels[c] for c in evaluation.cases])
    counts = np.bincount(y, minlength=evaluation.probs.shape[1]).astype(float)
    weights = np.where(counts > 0, 1 / np.maximum(counts, 1), 0.0)
    weights *= len(weights) / weights.sum()
    log_p = np.log(np.clip(evaluation.probs[np.arange(len(y)), y], 1e-12, 1.0))
    loss = float(-(weights[y] * log_p).sum() / weights[y].sum())
    return classification_metrics(evaluation.probs, y, loss)
