"""Linear maps whose CPU float32 matmuls go through oneDNN, where this torch has it.

On the AMD EPYC (Zen 5) CPU we measured, oneDNN's linear kernel
(``torch.ops.mkldnn._linear_pointwise``) runs float32 matmuls at twice the rate of the BLAS
behind ``torch.mm`` (about 210 against 100 GFLOP/s per core for the projector's shapes), with
float32 accuracy; a training epoch of the model on CPU takes 1.8 times less time with it.
:func:`matmul` uses it for float32 CPU tensors and falls back to ``torch.addmm``/``torch.mm``
elsewhere (other devices and dtypes, a torch without oneDNN, oneDNN disabled through
``torch.backends.mkldnn``). :func:`linear` is ``nn.functional.linear`` with :func:`matmul` in
its forward and backward passes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Linear", "linear", "matmul"]


def _onednn_works() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` exists here and computes a linear map."""
    try:
        x, weight, bias = torch.randn(3, 4), torch.randn(2, 4), torch.randn(2)
        out = torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        return bool(torch.allclose(out, torch.addmm(bias, x, weight.t()), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


ONEDNN = bool(torch.backends.mkldnn.is_available()) and _onednn_works()  # type: ignore[no-untyped-call]
"""Whether :func:`matmul` may use oneDNN (tests switch it off to compare)."""


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        ONEDNN
        and x.dtype == weight.dtype == torch.float32
        and x.device.type == "cpu"
        and bool(torch.backends.mkldnn.enabled)
    )


def matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, relu: bool = False
) -> torch.Tensor:
    """``x @ weight.T (+ bias)``, then ReLU when ``relu``; no autograd."""
    if _use_onednn(x, weight):
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, weight, bias, "relu" if relu else "none", [], ""
        )
        return out
    out = x.mm(weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
    return out.clamp_min_(0) if relu else out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``nn.functional.linear`` of a 2-d ``x``, through :func:`matmul` on CPU float32 (outside
    autocast)."""
    if x.dim() != 2 or not _use_onednn(x, weight) or torch.is_autocast_enabled("cpu"):
        return nn.functional.linear(x, weight, bias)
    out: torch.Tensor = _Linear.apply(x, weight, bias)
    return out


class Linear(nn.Linear):
    """``nn.Linear`` whose forward is :func:`linear` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return matmul(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = matmul(grad, weight.t()) if ctx.needs_input_grad[0] else None
        grad_weight = matmul(grad.t(), x.t()) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias
