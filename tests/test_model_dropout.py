"""The model's dropout: the drop rate, the expectation, reproducibility, eval mode."""

from __future__ import annotations

import pytest
import torch

from tuner.model import Dropout, dropout, dropout_mask


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5])
def test_drops_at_rate_p_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 512)
    out = dropout(x, p)
    dropped = (out == 0).double().mean().item()
    assert dropped == pytest.approx(p, abs=0.003)
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)), atol=1e-4, rtol=1e-4)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 64, requires_grad=True)  # large enough for the cheap masks
    out = dropout(x, 0.25)
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (out / x).detach())


def test_same_seed_same_mask() -> None:
    x = torch.randn(200, 50)
    torch.manual_seed(3)
    first = dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.3))
    assert not torch.equal(first, dropout(x, 0.3))


@pytest.mark.parametrize("shape", [(200, 50), (10, 8)])  # a CPU mask, a Bernoulli one
def test_masks_come_from_the_given_generator(shape: tuple[int, int]) -> None:
    x = torch.randn(shape)
    first = dropout(x, 0.3, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    again = dropout(x, 0.3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was not read
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(3)
    dropout(x, 0.3, generator=generator)
    assert not torch.equal(first, dropout(x, 0.3, generator=generator))


def test_small_tensors_and_extreme_rates_fall_back_to_torch() -> None:
    assert dropout_mask((10, 512), 0.25, torch.float32) is None  # 5120 elements
    assert dropout_mask((100, 512), 1e-6, torch.float32) is None
    made = dropout_mask((100, 512), 0.25, torch.float32)
    assert made is not None
    assert made[1] == pytest.approx(4 / 3)


def test_identity_in_eval_mode_and_for_p_zero() -> None:
    x = torch.randn(10, 8)
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match=r"p=1\.5"):
        Dropout(1.5)
