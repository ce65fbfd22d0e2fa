"""The trainer every trial and the final run share: one epoch loop for train, val and test.

The trainer knows nothing of Optuna: a tuning objective passes ``on_epoch``, which receives
each epoch's validation metrics and may raise to stop (``optuna.TrialPruned``); the exception
leaves :meth:`Trainer.fit` untouched. Between batches it stops if a worker was asked to
(:func:`tuner._interrupt.check`): never inside a checkpoint write or a callback.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuner import _interrupt
from tuner.config import RunConfig
from tuner.errors import TrainingError
from tuner.model import HierarchicalMIL, MILOutput, elasticnet_penalty, entropy_penalty
from tuner.training._batches import Batch, CaseSampler, StoreTensors
from tuner.training._lockstep import Lockstep, Member
from tuner.training._metrics import EpochCallback, EpochReport, Metrics, classification_metrics
from tuner.training._random import RunGenerators
from tuner.training._state import TrainState, metrics_dict

__all__ = ["EpochCallback", "EpochReport", "Evaluation", "FitResult", "Trainer", "TrainingRun"]

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Predictions on a split; with ``attention``, each patch's weights at the three levels.

    ``attention`` rows follow ``rows`` (store row indices): columns patch, slice and stain
    weight of the patch, its slice and its stain.
    """

    metrics: Metrics
    cases: list[str]
    labels: np.ndarray
    probs: np.ndarray
    rows: np.ndarray | None = None
    attention: np.ndarray | None = None


@dataclass
class FitResult:
    history: list[EpochReport]
    best_epoch: int
    best_val: Metrics
    state_dict: dict[str, torch.Tensor]
    stopped_by: str
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Trains and evaluates :class:`HierarchicalMIL` models on the cases of a store."""

    def __init__(self, config: RunConfig, data: StoreTensors, device: torch.device) -> None:
        self.config = config
        self.data = data
        self.device = device
        self.n_classes = len(data.store.classes)
        amp = config.train.amp and device.type == "cuda"
        bf16 = amp and torch.cuda.is_bf16_supported()
        self.autocast_dtype = torch.bfloat16 if bf16 else torch.float16 if amp else None

    def new_model(
        self,
        train_cases: list[str] | tuple[str, ...] | None = None,
        generator: torch.Generator | None = None,
    ) -> HierarchicalMIL:
        """A freshly initialised model on the trainer's device; inputs standardised with
        ``train_cases``' statistics. Its weights come from ``generator`` (None: a generator of
        its own seeded with ``train.seed``); no global generator is read."""
        m = self.config.model
        if generator is None:
            generator = torch.Generator(self.device).manual_seed(self.config.train.seed)
        model = HierarchicalMIL(
            self.data.store.dim, self.n_classes, embed_dim=m.embed_dim, attn_dim=m.attn_dim,
            dropout=m.dropout, gated=m.gated, pooling=m.pooling, generator=generator,
            device=self.device,
        )  # fmt: skip
        if train_cases is not None and m.standardize:
            model.set_input_statistics(*self.data.feature_statistics(train_cases))
        return model

    def class_weights(self, cases: list[str] | tuple[str, ...]) -> torch.Tensor:
        """1/frequency of each class among ``cases``, normalised to mean 1 (ones when off)."""
        counts = np.bincount(
            [self.data.store.case(c).class_index for c in cases], minlength=self.n_classes
        ).astype(np.float64)
        if not self.config.train.class_weights:
            counts = np.ones_like(counts)
        weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        weights *= self.n_classes / weights.sum()
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def sampler(self, cases: list[str] | tuple[str, ...], *, train: bool) -> CaseSampler:
        d, t = self.config.data, self.config.train
        return CaseSampler(
            self.data, cases, batch_cases=t.batch_cases,
            per_slice_cap=d.per_slice_cap if train else None,
            max_slices_per_stain=d.max_slices_per_stain if train else None,
            random_views=d.augmented_views and train,
        )  # fmt: skip

    def start(
        self,
        train_cases: list[str] | tuple[str, ...],
        val_cases: list[str] | tuple[str, ...] | None,
        *,
        epochs: int | None = None,
        seed: int | None = None,
    ) -> TrainingRun:
        """A new run of this trainer's config (``seed``: instead of ``train.seed``), before its
        first epoch. :meth:`fit` drives one run; several can be stepped in turn."""
        return TrainingRun(
            self, train_cases, val_cases, epochs=epochs or self.config.train.epochs,
            seed=self.config.train.seed if seed is None else seed,
        )  # fmt: skip

    def fit(
        self,
        train_cases: list[str] | tuple[str, ...],
        val_cases: list[str] | tuple[str, ...] | None,
        *,
        epochs: int | None = None,
        seed: int | None = None,
        on_epoch: EpochCallback | None = None,
        resume: TrainState | None = None,
        on_checkpoint: Callable[[TrainState], None] | None = None,
    ) -> FitResult:
        """Train on ``train_cases``; keep the weights of the epoch with the lowest val loss.

        Without ``val_cases`` (a refit) it trains exactly ``epochs`` epochs and keeps the last.
        ``resume`` continues a run from its state after an epoch (see :class:`TrainState`);
        ``on_checkpoint`` receives that state after every epoch that training goes on from.
        """
        member = Member(
            fold=0, repeat=0, train=tuple(train_cases), val=tuple(val_cases or ()),
            seed=self.config.train.seed if seed is None else seed,
        )  # fmt: skip
        save = None
        if on_checkpoint is not None:
            checkpoint = on_checkpoint

            def save(states: list[TrainState]) -> None:
                checkpoint(states[0])

        result = Lockstep(self, [member], epochs=epochs).fit(
            on_epoch=on_epoch, resume=None if resume is None else [resume], on_checkpoint=save
        )
        return result.runs[0].result(result.stopped_by, result.seconds)

    def _train_epoch(
        self,
        model: HierarchicalMIL,
        sampler: CaseSampler,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        weights: torch.Tensor,
        random: RunGenerators,
        epoch: int,
    ) -> tuple[float, float]:
        model.train()
        total = torch.zeros((), device=self.device)
        total_penalty = torch.zeros((), device=self.device)
        for batch in sampler.batches(random.numpy_rng):
            _interrupt.check()
            output = self._forward(model, batch, random.torch_rng)
            loss = self._loss(output.logits, batch.labels, weights)
            penalty = self._penalty(output)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss + penalty).backward()  # type: ignore[no-untyped-call]
            if self.config.train.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), self.config.train.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach() * len(batch.cases)
            total_penalty += penalty.detach() * len(batch.cases)
        mean_loss = float(total) / len(sampler)
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}: the training loss became {mean_loss}; lower "
                f"train.lr (now {self.config.train.lr:g}) or the penalty weights"
            )
        return mean_loss, float(total_penalty) / len(sampler)

    def evaluate(
        self,
        model: HierarchicalMIL,
        sampler: CaseSampler,
        weights: torch.Tensor,
        *,
        attention: bool = False,
    ) -> Evaluation:
        """Predict every case of the sampler (all patches, first view)."""
        model.eval()
        logits, labels, cases, rows, attn = [], [], [], [], []
        with torch.no_grad():
            for batch in sampler.batches(None):
                _interrupt.check()
                output = self._forward(model, batch)
                logits.append(output.logits.float())
                labels.append(batch.labels)
                cases += batch.cases
                if attention:
                    rows.append(batch.rows)
                    attn.append(_patch_attention(output, batch).cpu().numpy())
        all_logits, all_labels = torch.cat(logits), torch.cat(labels)
        loss = float(F.cross_entropy(all_logits, all_labels, weight=weights))
        probs = torch.softmax(all_logits, dim=1).cpu().numpy()
        y = all_labels.cpu().numpy()
        return Evaluation(
            classification_metrics(probs, y, loss), cases, y, probs,
            np.concatenate(rows) if attention else None,
            np.concatenate(attn) if attention else None,
        )  # fmt: skip

    def _forward(
        self, model: HierarchicalMIL, batch: Batch, generator: torch.Generator | None = None
    ) -> MILOutput:
        # the float16 features go in as they are: the model casts them chunk by chunk
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            output: MILOutput = model(batch.bags, generator)
        return output

    def _loss(
        self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        logits = logits.float()
        t = self.config.train
        if t.loss == "ce":
            return F.cross_entropy(logits, labels, weight=weights)
        log_p = F.log_softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
        focal = -((1 - log_p.exp()) ** t.focal_gamma) * log_p
        w = weights[labels]
        return (w * focal).sum() / w.sum()

    def _penalty(self, output: MILOutput) -> torch.Tensor:
        r = self.config.regularization
        if r.penalty == "entropy":
            return entropy_penalty(output.attention, r.entropy.as_dict()).float()
        if r.penalty == "elasticnet":
            return elasticnet_penalty(
                output.attention, r.elasticnet.l1.as_dict(), r.elasticnet.l2.as_dict()
            ).float()
        return torch.zeros((), device=self.device)


Best = tuple[float, int, Metrics, dict[str, torch.Tensor]]
"""The best epoch so far: its val loss, number, metrics and weights."""


class TrainingRun:
    """One model in training: weights, optimiser, scheduler, loss scaler, its own generators
    (:class:`RunGenerators`), the epochs so far and the best of them.

    Nothing of one run is shared with another or with global state, so runs can be stepped in
    turn in one process; each gives what it gives alone. Made by :meth:`Trainer.start`.
    """

    def __init__(
        self,
        trainer: Trainer,
        train_cases: list[str] | tuple[str, ...],
        val_cases: list[str] | tuple[str, ...] | None,
        *,
        epochs: int,
        seed: int,
    ) -> None:
        self.trainer = trainer
        self.epochs = epochs
        self.random = RunGenerators.seeded(seed, trainer.device)
        self.model = trainer.new_model(train_cases, self.random.torch_rng)
        self.optimizer = _optimizer(self.model, trainer.config)
        self.scheduler = _scheduler(self.optimizer, trainer.config, epochs)
        self.scaler = torch.amp.GradScaler(enabled=trainer.autocast_dtype is torch.float16)
        self.weights = trainer.class_weights(train_cases)
        self.train_sampler = trainer.sampler(train_cases, train=True)
        self.val_sampler = trainer.sampler(val_cases, train=False) if val_cases else None
        self.history: list[EpochReport] = []
        self.best: Best | None = None

    @property
    def epoch(self) -> int:
        """Epochs trained so far."""
        return len(self.history)

    @property
    def validates(self) -> bool:
        return self.val_sampler is not None

    def train_epoch(self) -> EpochReport:
        """Train one epoch, validate, and record it (the best epoch too); the scheduler is
        stepped apart (:meth:`step_scheduler`)."""
        trainer, t = self.trainer, self.trainer.config.train
        epoch = self.epoch + 1
        tick = time.perf_counter()
        train_loss, penalty = trainer._train_epoch(
            self.model, self.train_sampler, self.optimizer, self.scaler, self.weights,
            self.random, epoch,
        )  # fmt: skip
        if self.val_sampler is not None:
            val = trainer.evaluate(self.model, self.val_sampler, self.weights).metrics
        else:
            val = Metrics(float("nan"), None, float("nan"), float("nan"), 0)
        lr = self.optimizer.param_groups[0]["lr"]
        report = EpochReport(epoch, train_loss, penalty, val, lr, time.perf_counter() - tick)
        self.history.append(report)
        logger.debug(
            "epoch %d: train loss %.4f, val loss %.4f, val auc %s, %.2fs",
            epoch, train_loss, val.loss, val.auc, report.seconds,
        )  # fmt: skip
        if self.val_sampler is not None and not math.isfinite(val.loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}: the validation loss became {val.loss}; "
                f"lower train.lr (now {t.lr:g}) or the penalty weights"
            )
        if self.val_sampler is None or self.best is None or val.loss < self.best[0]:
            self.best = (val.loss, epoch, val, _copy_state(self.model))
        return report

    def step_scheduler(self, val_loss: float) -> None:
        _step_scheduler(self.scheduler, val_loss)

    def result(self, stopped_by: str, seconds: float) -> FitResult:
        assert self.best is not None, "no epoch trained"
        best = self.best
        return FitResult(self.history, best[1], best[2], best[3], stopped_by, seconds)

    def state(self) -> TrainState:
        """Everything needed to go on after this epoch (see :class:`TrainState`)."""
        assert self.best is not None, "no epoch trained"
        best = self.best
        return TrainState(
            epoch=self.epoch,
            model=_copy_state(self.model),
            optimizer=copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not live tensors
            scheduler=None if self.scheduler is None else self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            numpy_rng=self.random.numpy_state(),
            torch_rng=self.random.torch_state(),
            torch_rng_device=self.random.device_type,
            history=[{**asdict(e), "val": metrics_dict(e.val)} for e in self.history],
            best={"loss": best[0], "epoch": best[1], "val": metrics_dict(best[2]),
                  "state": best[3]},
        )  # fmt: skip

    def restore(self, state: TrainState) -> None:
        """Continue from ``state``, saved by a run of the same config and cases."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        if self.scheduler is not None and state.scheduler is not None:
            self.scheduler.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        self.random.restore(state.numpy_rng, state.torch_rng, state.torch_rng_device, state.epoch)
        self.history = [EpochReport(**{**e, "val": Metrics(**e["val"])}) for e in state.history]
        self.best = None
        if state.best is not None:
            b = state.best
            device = self.trainer.device
            weights = {k: v.to(device) for k, v in b["state"].items()}
            self.best = (float(b["loss"]), int(b["epoch"]), Metrics(**b["val"]), weights)


def _patch_attention(output: MILOutput, batch: Batch) -> torch.Tensor:
    """Per patch: its weight in its slice, its slice's in its stain, its stain's in its case."""
    att = output.attention
    slice_of_patch = batch.bags.slice_of_patch
    stain_of_patch = batch.bags.stain_of_slice[slice_of_patch]
    return torch.stack(
        [
            att["patch"].weights,
            att["slice"].weights[slice_of_patch],
            att["stain"].weights[stain_of_patch],
        ],
        dim=1,
    ).float()


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    t = config.train
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel per parameter instead of a dozen ops with temporaries (a fifth of a
    # small step's time on CPU)
    return cls(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)


def _scheduler(
    optimizer: torch.optim.Optimizer, config: RunConfig, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    t = config.train
    if t.lr_schedule is not None:  # a refit replays the schedule its cross-validation found
        schedule, base = t.lr_schedule, t.lr
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: schedule[min(epoch, len(schedule) - 1)] / base
        )
    if t.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=t.plateau_factor, patience=t.plateau_patience
        )
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


def _step_scheduler(
    scheduler: torch.optim.lr_scheduler.LRScheduler
    | torch.optim.lr_scheduler.ReduceLROnPlateau
    | None,
    val_loss: float,
) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if math.isfinite(val_loss):
            scheduler.step(val_loss)
    elif scheduler is not None:
        scheduler.step()
