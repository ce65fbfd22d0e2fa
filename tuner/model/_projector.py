"""The patch projector: standardised input -> Linear -> ReLU -> dropout, ``(n, in) -> (n, embed)``.

It is the model's one large matmul and, on CPU, runs as one fused op: the matmul, then ReLU and
the dropout mask applied in place, saving only the input (as given, e.g. float16) and the
output for the backward pass; ReLU's and dropout's gradient mask is ``output > 0``. Unfused,
ReLU and dropout would each write and keep a fresh ``(n, embed)`` tensor and read it back.

Its two matmuls (the forward, with ReLU fused, and the weight gradient) are
:func:`tuner.model._linear.matmul`: oneDNN's for float32 where this torch has it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tuner.model._dropout import Dropout, dropout_mask
from tuner.model._linear import matmul

__all__ = ["Projector", "StandardizedLinear"]


class StandardizedLinear(nn.Linear):
    """``Linear`` applied to standardised inputs ``(x - mean) * scale``, folded into the weights.

    ``mean`` and ``scale`` are buffers (saved with the model), set from the training data with
    :meth:`set_input_statistics`; until then they are the identity. Folding costs
    ``O(out * in)`` per call instead of an extra pass over the ``(n, in)`` input.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))

    def set_input_statistics(
        self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-2
    ) -> None:
        """Standardise with these per-feature statistics; ``eps`` floors tiny deviations."""
        self.mean.copy_(mean)
        self.scale.copy_(1.0 / torch.sqrt(std.square() + eps**2))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weight and bias that act on raw inputs."""
        weight = self.weight * self.scale
        return weight, self.bias - weight @ self.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.folded()
        return nn.functional.linear(x, weight.to(x.dtype), bias.to(x.dtype))


class Projector(nn.Sequential):
    """``StandardizedLinear -> ReLU -> Dropout``: ``(n, in_dim) -> (n, embed_dim)``.

    The input may be float16 (as stored); the output is in the weights' dtype (or autocast's).
    On CPU without autocast the three run fused (see the module docstring); elsewhere one after
    the other. Both give the same values.
    """

    def __init__(self, in_dim: int, embed_dim: int, dropout: float) -> None:
        super().__init__(StandardizedLinear(in_dim, embed_dim), nn.ReLU(), Dropout(dropout))

    @property
    def linear(self) -> StandardizedLinear:
        first = self[0]
        assert isinstance(first, StandardizedLinear)
        return first

    @property
    def dropout(self) -> Dropout:
        last = self[2]
        assert isinstance(last, Dropout)
        return last

    def forward(
        self,
        x: torch.Tensor,
        folded: tuple[torch.Tensor, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``folded``: the linear layer's :meth:`~StandardizedLinear.folded` weights, when the
        caller projects several chunks and folds once; ``generator``: dropout's (see
        :func:`~tuner.model.dropout`)."""
        linear, drop = self.linear, self.dropout
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            x = x if torch.is_autocast_enabled(x.device.type) else x.to(linear.weight.dtype)
            return drop.forward(torch.relu(linear.forward(x)), generator)
        weight, bias = folded or linear.folded()
        mask = None
        if drop.training and drop.p > 0:
            mask = dropout_mask((len(x), len(weight)), drop.p, weight.dtype, generator)
            if mask is None:
                x = nn.functional.linear(x.to(weight.dtype), weight, bias)
                return drop.forward(torch.relu(x), generator)
        out: torch.Tensor = _LinearReLUMask.apply(x, weight, bias, *(mask or (None, 1.0)))
        return out


class _LinearReLUMask(torch.autograd.Function):
    """``relu(x @ weight.T + bias) * mask`` (``mask``: 0 or ``scale``, or None for ones)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        mask: torch.Tensor | None,
        scale: float,
    ) -> torch.Tensor:
        out = matmul(x.to(weight.dtype), weight, bias, relu=True)
        if mask is not None:
            out.mul_(mask)
        ctx.save_for_backward(x, weight, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, out = ctx.saved_tensors
        # where out > 0 the input passed ReLU and dropout (times ``scale``); elsewhere 0
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        scale = ctx.scale
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad.mm(weight) * scale).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = matmul(grad.t(), x.to(grad.dtype).t()).mul_(scale)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0).mul_(scale)
        return grad_x, grad_weight, grad_bias, None, None
