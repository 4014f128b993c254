"""Hard-concrete L0 gates (Louizos et al., 2018), as used by Robust Tickets (Zheng et al., 2022).

Stretch limits l = -0.1, r = 1.1 and temperature beta = 2/3 (docs/methods.md, hard-concrete):
  training sample   u ~ U(eps, 1 - eps), s = sigmoid((log u - log(1 - u) + log_alpha) / beta),
                    z = clamp(s (r - l) + l, 0, 1)
  deterministic     z = clamp(sigmoid(log_alpha) (r - l) + l, 0, 1)
  expected L0       P(z != 0) = sigmoid(log_alpha - beta log(-l / r))         (Louizos et al., eq. 12)
log_alpha starts at ln 5, i.e. a deterministic gate of 0.9.

The training sample and the expected L0 run once per step over millions of gates (one per weight), so both are
fused `torch.autograd.Function`s: the noise is drawn and transformed in place, the backward pass keeps only s
(and which samples were clamped), and the gradients are bit-for-bit those of the plain autograd graph.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

from ..sparsity import HARD_CONCRETE_BETA as BETA, HARD_CONCRETE_L0_SHIFT as _L0_SHIFT, HARD_CONCRETE_LIMITS
from ..sparsity import keep_probability as expected_l0
from ..targets import Target
from .base import MaskParametrization, attach
from .layout import Layout

LIMIT_L, LIMIT_R = HARD_CONCRETE_LIMITS
INIT_LOG_ALPHA = math.log(5.0)
_EPS = 1e-6
_STRETCH = LIMIT_R - LIMIT_L


class _HardConcreteSample(torch.autograd.Function):
    """z (or weight * z when a weight is given, same shape as log_alpha) for fresh uniform noise.

    Backward: dz/dlog_alpha = (r - l) s (1 - s) / beta where 0 <= s (r - l) + l <= 1, else 0 (the clamp). The
    saved s is set to 0 where the clamp is active, so that s (1 - s) is 0 there and no mask needs keeping. The
    operations run in the order autograd evaluates the unfused graph, so the gradient is identical to it.
    """

    @staticmethod
    def forward(ctx, log_alpha: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        s = torch.rand_like(log_alpha).logit_(_EPS)  # log u - log(1 - u) with u clamped to [eps, 1 - eps]
        s.add_(log_alpha).div_(BETA).sigmoid_()
        z = torch.mul(s, _STRETCH).add_(LIMIT_L)
        s.mul_((z >= 0).logical_and_(z <= 1))
        z.clamp_(0.0, 1.0)
        if weight is None:
            ctx.save_for_backward(s, None, None)
            return z
        if weight.requires_grad:  # not during mask search (weights frozen), but keep the Function general
            ctx.save_for_backward(s, weight, z)
            return z.to(weight.dtype) * weight
        ctx.save_for_backward(s, weight, None)
        return z.to(weight.dtype).mul_(weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s, weight, z = ctx.saved_tensors
        grad_weight = grad_out * z.to(weight.dtype) if z is not None and ctx.needs_input_grad[1] else None
        if not ctx.needs_input_grad[0]:
            return None, grad_weight
        grad = grad_out * _STRETCH if weight is None else (grad_out * weight).to(s.dtype).mul_(_STRETCH)
        torch.ops.aten.sigmoid_backward.grad_input(grad, s, grad_input=grad)  # grad * (1 - s) * s, in place
        return grad.div_(BETA), grad_weight


class _ExpectedL0Sums(torch.autograd.Function):
    """Per tensor, sum of sigmoid(log_alpha - beta log(-l / r)); backward is one sigmoid-derivative pass each."""

    @staticmethod
    def forward(ctx, *log_alphas: torch.Tensor) -> torch.Tensor:
        probs = [torch.sub(la, _L0_SHIFT).sigmoid_() for la in log_alphas]
        ctx.save_for_backward(*probs)
        return torch.stack([p.sum() for p in probs])

    @staticmethod
    def backward(ctx, grad_sums: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.ops.aten.sigmoid_backward(g.expand_as(p), p)
                     for g, p in zip(grad_sums.unbind(), ctx.saved_tensors))


def sample_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    """A training-time sample z of every gate (differentiable in log_alpha)."""
    return _HardConcreteSample.apply(log_alpha, None)


def sample_masked_weight(log_alpha: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weight * z for per-weight gates (log_alpha shaped like weight), without materialising z separately."""
    return _HardConcreteSample.apply(log_alpha, weight)


def deterministic_gate(log_alpha: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(log_alpha) * _STRETCH + LIMIT_L).clamp(0.0, 1.0)


class HardConcreteGate(MaskParametrization):
    """One `log_alpha` per group; samples a gate while training, uses the deterministic gate in eval mode."""

    def __init__(self, layout: Layout, init_log_alpha: float = INIT_LOG_ALPHA):
        super().__init__(layout)
        self.log_alpha = torch.nn.Parameter(torch.full(layout.group_shape, float(init_log_alpha)))

    def gate(self) -> torch.Tensor:
        return sample_gate(self.log_alpha) if self.training else deterministic_gate(self.log_alpha)

    def binary(self) -> torch.Tensor:
        return deterministic_gate(self.log_alpha.detach()) > 0

    def state(self) -> torch.Tensor:
        return self.log_alpha

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training and self.layout.axis is None:
            return sample_masked_weight(self.log_alpha, weight)
        return super().forward(weight)


def attach_hard_concrete(
    model: torch.nn.Module, targets: Iterable[Target], *, granularity: str = "weight",
    init_log_alpha: float = INIT_LOG_ALPHA,
) -> dict[str, HardConcreteGate]:
    """Put a hard-concrete gate on every target and freeze every model weight (only log_alpha is trained)."""
    return attach(model, targets, granularity, lambda t, layout, w: HardConcreteGate(layout, init_log_alpha))


def _expected_l0_sums(gates: Sequence[HardConcreteGate]) -> list[torch.Tensor]:
    return list(_ExpectedL0Sums.apply(*(g.log_alpha for g in gates)).unbind())


def mean_expected_l0(gates: dict[str, HardConcreteGate]) -> torch.Tensor:
    """Expected fraction of non-zero gates, averaged per matrix then over matrices (Robust Tickets' L0 term)."""
    sums = _expected_l0_sums(list(gates.values()))
    return torch.stack([total / g.log_alpha.numel() for total, g in zip(sums, gates.values())]).mean()


def expected_density(gates: dict[str, HardConcreteGate]) -> torch.Tensor:
    """Expected fraction of non-zero weights over all targets (weights counted, for a target sparsity)."""
    segments = [(part, weights) for g in gates.values()
                for part, weights in zip(g.layout.split(g.log_alpha), g.layout.unit_weights())]
    sums = list(_ExpectedL0Sums.apply(*(part for part, _ in segments)).unbind())
    kept = torch.stack([total * weights for total, (_, weights) in zip(sums, segments)]).sum()
    return kept / sum(part.numel() * weights for part, weights in segments)
