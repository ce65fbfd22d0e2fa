"""The patch projector: its fused CPU op equals Linear -> ReLU -> dropout, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuner.model import _linear, dropout_mask
from tuner.model._projector import Projector, _LinearReLUMask


def make_projector(p: float) -> Projector:
    torch.manual_seed(0)
    projector = Projector(12, 6, p).double()
    generator = torch.Generator().manual_seed(5)
    mean = torch.randn(12, generator=generator, dtype=torch.float64)
    std = torch.rand(12, generator=generator, dtype=torch.float64) + 0.5
    projector.linear.set_input_statistics(mean, std)
    return projector


def unfused(projector: Projector, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    linear = projector.linear
    standardized = (x - linear.mean) * linear.scale
    h = torch.relu(F.linear(standardized, linear.weight, linear.bias))
    return h if mask is None else h * mask


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_fused_projector_equals_linear_relu_dropout(p: float) -> None:
    projector = make_projector(p).train()
    x = torch.randn(2000, 12, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2000, 6, dtype=torch.float64)

    torch.manual_seed(7)
    fused = projector(x)
    fused.backward(grad)
    fused_grads = [t.grad.clone() for t in (x, *projector.parameters())]  # type: ignore[union-attr]
    x.grad = None
    projector.zero_grad()

    torch.manual_seed(7)
    made = dropout_mask((2000, 6), p, torch.float64) if p else None
    reference = unfused(projector, x, made[0] if made else None)
    reference.backward(grad)

    torch.testing.assert_close(fused, reference)
    for got, param in zip(fused_grads, (x, *projector.parameters()), strict=True):
        torch.testing.assert_close(got, param.grad)
    if p:
        assert 0 < int((fused == 0).sum()) < fused.numel()


def test_fused_op_passes_gradcheck() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(9, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = (torch.rand(9, 4, generator=generator) > 0.3).double() * 2.0
    assert torch.autograd.gradcheck(
        lambda *t: _LinearReLUMask.apply(*t, mask, 2.0), (x, weight, bias)
    )


def test_float16_input_gives_output_in_the_weights_dtype() -> None:
    projector = Projector(12, 6, 0.25).eval()
    x = torch.randn(5, 12)
    out = projector(x.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, projector(x), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("onednn", [True, False])
def test_float32_matmuls_match_float64(onednn: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float32 path (through oneDNN where this torch has it, else torch.mm) keeps float32
    accuracy: values and gradients as the float64 computation, within float32 rounding."""
    monkeypatch.setattr(_linear, "ONEDNN", onednn and _linear.ONEDNN)
    projector = make_projector(0.3).train()
    x = torch.randn(3000, 12, dtype=torch.float64)
    grad = torch.randn(3000, 6, dtype=torch.float64)
    results = []
    for dtype in (torch.float64, torch.float32):
        projector.to(dtype).zero_grad()
        torch.manual_seed(7)
        out = projector(x.to(dtype))
        out.backward(grad.to(dtype))
        grads = [p.grad.clone().double() for p in projector.parameters() if p.grad is not None]
        results.append([out.detach().double(), *grads])
    for wide, narrow in zip(*results, strict=True):
        torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("onednn", [True, False])
def test_linear_matches_float64(onednn: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attention's linear map: float32 values and gradients as in float64."""
    monkeypatch.setattr(_linear, "ONEDNN", onednn and _linear.ONEDNN)
    generator = torch.Generator().manual_seed(3)
    tensors = [torch.randn(shape, dtype=torch.float64, generator=generator) for shape in
               ((500, 16), (8, 16), (8,), (500, 8))]  # fmt: skip
    results = []
    for dtype in (torch.float64, torch.float32):
        x, weight, bias = (t.to(dtype).detach().requires_grad_() for t in tensors[:3])
        out = _linear.linear(x, weight, bias)
        out.backward(tensors[3].to(dtype))
        results.append([t.detach().double() for t in (out, x.grad, weight.grad, bias.grad)])
    for wide, narrow in zip(*results, strict=True):
        torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-4)
