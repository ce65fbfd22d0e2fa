"""Training resumed from a saved state continues exactly as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuner.config import apply_overrides, parse_config
from tuner.features import FeatureStore
from tuner.training import (
    RunGenerators,
    StoreTensors,
    Trainer,
    TrainState,
    load_state,
    save_state,
)


class Killed(Exception):
    pass


@pytest.mark.parametrize("scheduler", ["plateau", "cosine"])
def test_resumed_training_equals_an_unbroken_run(
    store: FeatureStore, tmp_path: Path, scheduler: str
) -> None:
    config = apply_overrides(
        parse_config({"data": {"features": str(store.path)}}),
        {"model.embed_dim": 16, "model.attn_dim": 8, "train.epochs": 6, "train.batch_cases": 3,
         "train.lr": 1e-3, "train.device": "cpu", "train.early_stopping": None,
         "train.scheduler": scheduler, "data.per_slice_cap": 2},
        source="test",
    )  # fmt: skip
    data = StoreTensors.load(store, torch.device("cpu"))
    names = [c.case for c in store.cases]
    train, val = names[:6], names[6:]
    unbroken = Trainer(config, data, torch.device("cpu")).fit(train, val)

    path = tmp_path / "state.pt"

    def save_then_die(state: TrainState) -> None:
        save_state(state, path)
        if state.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        Trainer(config, data, torch.device("cpu")).fit(train, val, on_checkpoint=save_then_die)
    state = load_state(path)
    assert state is not None
    assert state.epoch == 3
    assert state.torch_rng_device == "cpu"
    resumed = Trainer(config, data, torch.device("cpu")).fit(train, val, resume=state)

    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in unbroken.history]
    assert [e.val.loss for e in resumed.history] == [e.val.loss for e in unbroken.history]
    assert resumed.best_epoch == unbroken.best_epoch
    for key, value in unbroken.state_dict.items():
        assert torch.equal(resumed.state_dict[key], value), key


def test_missing_or_broken_state_is_none(tmp_path: Path) -> None:
    assert load_state(tmp_path / "none.pt") is None
    (tmp_path / "broken.pt").write_bytes(b"half a file")
    assert load_state(tmp_path / "broken.pt") is None


def test_state_of_another_device_type_resumes_deterministically(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CUDA generator's state cannot seed a CPU one: the run goes on from its seed and epoch,
    the same way each time, and says so."""
    saved = RunGenerators.seeded(7, torch.device("cpu"))
    saved.numpy_rng.random(5)
    draws = []
    for _ in range(2):
        run = RunGenerators.seeded(7, torch.device("cpu"))
        run.restore(saved.numpy_state(), torch.zeros(16, dtype=torch.uint8), "cuda", epoch=3)
        draws.append((torch.rand(4, generator=run.torch_rng), run.numpy_rng.random(2)))
    assert torch.equal(draws[0][0], draws[1][0])
    assert (draws[0][1] == saved.numpy_rng.random(2)).all()
    assert "saved on cuda and resumes on cpu" in caplog.text
