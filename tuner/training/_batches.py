"""Batches of cases from a feature store, drawn afresh each epoch.

The whole store lives in one tensor on the training device. Each epoch picks rows (all of
them, or at random ``per_slice_cap`` patches per slice and ``max_slices_per_stain`` slices per
stain), a view per row (a random stored view when training on augmented views), and splits
the cases into batches of ``batch_cases``. All of this is index arithmetic in numpy; the
features are gathered on the device with one ``index_select`` per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tuner.data import group_ids
from tuner.features import FeatureStore
from tuner.model import Bags

__all__ = ["Batch", "CaseSampler", "StoreTensors"]


@dataclass
class StoreTensors:
    """The store's features and group ids, ready for sampling.

    ``features: (n_rows * n_views, dim)`` float16 on the training device (row ``r``, view ``v``
    at ``r * n_views + v``).
    """

    store: FeatureStore
    features: torch.Tensor
    n_views: int

    @classmethod
    def load(cls, store: FeatureStore, device: torch.device) -> StoreTensors:
        features = store.load(device).reshape(-1, store.dim)
        return cls(store, features, store.n_views)

    def feature_statistics(
        self, cases: list[str] | tuple[str, ...], chunk: int = 1 << 13
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-feature mean and standard deviation over the patches (first view) of ``cases``.

        Computed ``chunk`` rows at a time (merged with Chan et al.'s formula, in float64), so
        the memory it needs does not grow with the store.
        """
        rows = np.concatenate([np.arange(c.start, c.stop) for c in map(self.store.case, cases)])
        index = torch.from_numpy(rows * self.n_views).to(self.features.device)
        count = 0
        mean = m2 = torch.zeros(self.features.shape[1], device=index.device, dtype=torch.float64)
        for start in range(0, len(index), chunk):
            x = self.features.index_select(0, index[start : start + chunk]).double()
            var_c, mean_c = torch.var_mean(x, dim=0, correction=0)
            n_c = len(x)
            delta = mean_c - mean
            total = count + n_c
            mean = mean + delta * (n_c / total)
            m2 = m2 + var_c * n_c + delta.square() * (count * n_c / total)
            count = total
        std = torch.sqrt(m2 / max(count - 1, 1))
        return mean.float(), std.float()


@dataclass
class Batch:
    """Bags of some cases, their labels ``(n_cases,)``, ids and the store rows of the patches."""

    bags: Bags
    labels: torch.Tensor
    cases: list[str]
    rows: np.ndarray


class CaseSampler:
    """Draws the batches of one split (a fixed list of cases) epoch after epoch."""

    def __init__(
        self,
        data: StoreTensors,
        cases: list[str] | tuple[str, ...],
        *,
        batch_cases: int,
        per_slice_cap: int | None = None,
        max_slices_per_stain: int | None = None,
        random_views: bool = False,
    ) -> None:
        store = data.store
        self.data = data
        self.batch_cases = batch_cases
        self.per_slice_cap = per_slice_cap
        self.max_slices_per_stain = max_slices_per_stain
        self.random_views = random_views and data.n_views > 1
        self.cases = list(cases)
        ranges = [store.case(c) for c in self.cases]
        self.labels = np.array([c.class_index for c in ranges], dtype=np.int64)
        self.rows = np.concatenate([np.arange(c.start, c.stop) for c in ranges])
        self.case_of_row = np.repeat(np.arange(len(ranges)), [c.stop - c.start for c in ranges])
        self.slice_of_row = store.slice_of_row[self.rows]
        self.stain_of_row = store.stain_group_of_row[self.rows]

    def __len__(self) -> int:
        return len(self.cases)

    def batches(self, rng: np.random.Generator | None = None) -> Iterator[Batch]:
        """One epoch of batches: random rows, views and case order with ``rng``; all in order
        without it."""
        keep = np.ones(len(self.rows), dtype=bool)
        if rng is not None:
            if self.max_slices_per_stain is not None:
                first = _first_of_runs(self.slice_of_row)
                rank_of_slice = _random_rank(first, self.stain_of_row, rng)[first]
                keep &= rank_of_slice[group_ids(self.slice_of_row)] < self.max_slices_per_stain
            if self.per_slice_cap is not None:
                keep &= _random_rank(keep, self.slice_of_row, rng) < self.per_slice_cap
        selected = np.flatnonzero(keep)
        bounds = np.searchsorted(self.case_of_row[selected], np.arange(len(self.cases) + 1))
        order = rng.permutation(len(self.cases)) if rng is not None else np.arange(len(self.cases))
        for start in range(0, len(order), self.batch_cases):
            chosen = order[start : start + self.batch_cases]
            picked = np.concatenate([selected[bounds[c] : bounds[c + 1]] for c in chosen])
            yield self._batch(chosen, picked, rng)

    def _batch(
        self, chosen: np.ndarray, picked: np.ndarray, rng: np.random.Generator | None
    ) -> Batch:
        rows = self.rows[picked]
        index = rows * self.data.n_views
        if self.random_views and rng is not None:
            index = index + rng.integers(0, self.data.n_views, size=len(rows))
        slice_ids = group_ids(self.slice_of_row[picked])
        first_of_slice = _first_of_runs(slice_ids)
        stain_ids = group_ids(self.stain_of_row[picked][first_of_slice])
        first_of_stain = _first_of_runs(stain_ids)
        case_ids = group_ids(self.case_of_row[picked][first_of_slice][first_of_stain])
        device = self.data.features.device
        features = self.data.features.index_select(0, torch.from_numpy(index).to(device))
        bags = Bags(
            features,
            torch.from_numpy(slice_ids).to(device),
            torch.from_numpy(stain_ids).to(device),
            torch.from_numpy(case_ids).to(device),
            len(chosen),
        )
        labels = torch.from_numpy(self.labels[chosen]).to(device)
        return Batch(bags, labels, [self.cases[c] for c in chosen], rows)


def _first_of_runs(ids: np.ndarray) -> np.ndarray:
    """Boolean mask of the first item of each run of equal ids."""
    mask = np.ones(len(ids), dtype=bool)
    mask[1:] = ids[1:] != ids[:-1]
    return mask


def _random_rank(items: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each position, its random rank among the ``items`` (a mask) of its group.

    Groups are runs of equal ids. Positions outside ``items`` get rank ``len(items)``, which no
    cap keeps. One sort of ``run + uniform`` keys (three times faster than a two-key lexsort).
    """
    n = len(group)
    run = group_ids(group)
    key = np.where(items, rng.random(n), 2.0)
    key += 4.0 * run
    order = np.argsort(key)
    run_start = np.flatnonzero(_first_of_runs(run))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(run_start, np.diff(np.append(run_start, n)))
    rank[~items] = n
    return rank
