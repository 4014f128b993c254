"""Hard-concrete L0 gates (Louizos et al., 2018) trained under one of two controllers: a fixed lambda ramp
(Robust Tickets, Zheng et al., 2022) or a Lagrangian that drives the expected sparsity to the target (CoFiPruning,
Xia et al., 2022; Wang et al., 2020). docs/methods.md, "Hard-concrete gates".

Stretch limits l = -0.1, r = 1.1 and temperature beta = 2/3:
  training sample   u ~ U(eps, 1 - eps), s = sigmoid((log u - log(1 - u) + log_alpha) / beta),
                    z = clamp(s (r - l) + l, 0, 1)
  deterministic     z = clamp(sigmoid(log_alpha) (r - l) + l, 0, 1)
  expected L0       P(z != 0) = sigmoid(log_alpha - beta log(-l / r))         (Louizos et al., eq. 12)
log_alpha starts at ln 5, i.e. a deterministic gate of 0.9.

The training sample and the expected L0 run once per step over millions of gates (one per weight), so both are
fused `torch.autograd.Function`s: the noise is drawn and transformed in place, the backward pass keeps only s
(and which samples were clamped), and the gradients are bit-for-bit those of the plain autograd graph.

Controllers (`--controller`): `FixedLambda` adds lambda_t x (mean expected L0) with lambda_t ramped to
`--l0_lambda`; the sparsity it reaches follows from lambda, the learning rate and the training length, and
`--target_sparsity` steers nothing (it is recorded; `check` warns). `Lagrangian` steers the expected sparsity to
`--target_sparsity`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Sequence

import torch

from ...registry import OptionGroups, check_choice
from ...sparsity import HARD_CONCRETE_BETA as BETA, HARD_CONCRETE_L0_SHIFT as _L0_SHIFT, HARD_CONCRETE_LIMITS
from ...sparsity import gate_scalars
from ...sparsity import keep_probability as expected_l0
from ...targets import Target
from ...training import Trainer
from ..base import MaskParametrization, attach
from ..callbacks import MaskSearchCallback
from ..layout import Layout
from ..search_context import FoundMask, SearchContext, SharedSearchOptions

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


def _ramp(step: int, max_steps: int, start: float, end: float) -> float:
    """0 before `start` x max_steps, 1 after `end` x max_steps, linear in between."""
    begin, finish = start * max_steps, end * max_steps
    if finish <= begin:
        return float(step >= begin)
    return min(1.0, max(0.0, (step - begin) / (finish - begin)))


class FixedLambda(MaskSearchCallback):
    """Robust Tickets: loss += lambda_t x L0, L0 averaged per matrix then over matrices; lambda_t ramps linearly
    from 0 to `lam` between `ramp_start` and `ramp_end` (fractions of training, 10% and 40% by default)."""

    def __init__(self, gates: dict[str, HardConcreteGate], *, lam: float, lr: float = 0.1, weight_decay: float = 1e-6,
                 ramp_start: float = 0.1, ramp_end: float = 0.4):
        super().__init__(gates, lr=lr, weight_decay=weight_decay)
        self.lam, self.ramp_start, self.ramp_end = lam, ramp_start, ramp_end
        self._penalty = torch.zeros(())

    def current_lambda(self, trainer: Trainer) -> float:
        return self.lam * _ramp(trainer.global_step, trainer.max_steps, self.ramp_start, self.ramp_end)

    def extra_loss(self, trainer: Trainer) -> torch.Tensor:
        self._penalty = self.current_lambda(trainer) * mean_expected_l0(self.masks)
        return self._penalty

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        return {**super().log_scalars(trainer), **_gate_scalars(self.masks),
                "train/lambda": self.current_lambda(trainer), "train/l0_penalty": float(self._penalty.detach())}


class Lagrangian(MaskSearchCallback):
    """CoFiPruning: loss += l1 (s - t) + l2 (s - t)^2 with s the expected sparsity (weights counted) and t the
    target, warmed up linearly from 0 over `warmup_fraction` of training; l1, l2 are trained by gradient ascent
    (their gradients are negated before the optimizer step)."""

    def __init__(self, gates: dict[str, HardConcreteGate], *, target: float, lr: float = 0.1,
                 weight_decay: float = 0.0, lagrangian_lr: float = 0.1, warmup_fraction: float = 0.5):
        super().__init__(gates, lr=lr, weight_decay=weight_decay)
        self.target, self.lagrangian_lr, self.warmup_fraction = target, lagrangian_lr, warmup_fraction
        self.multipliers = torch.nn.Parameter(torch.zeros(2))
        self._expected = torch.zeros(())

    def on_train_begin(self, trainer: Trainer) -> None:
        # The Trainer has placed the model (and so the gates): the multipliers join them before the optimizer is
        # built, so that the penalty, its gradient and the optimizer state stay on the model's device.
        self.multipliers = torch.nn.Parameter(self.multipliers.detach().to(trainer.device))

    def current_target(self, trainer: Trainer) -> float:
        return self.target * _ramp(trainer.global_step, trainer.max_steps, 0.0, self.warmup_fraction)

    def param_groups(self, trainer: Trainer) -> list[dict[str, Any]]:
        return super().param_groups(trainer) + [
            {"params": [self.multipliers], "lr": self.lagrangian_lr, "weight_decay": 0.0, "clip": False}]

    def extra_loss(self, trainer: Trainer) -> torch.Tensor:
        self._expected = 1.0 - expected_density(self.masks)
        gap = self._expected - self.current_target(trainer)
        return self.multipliers[0] * gap + self.multipliers[1] * gap * gap

    def on_after_backward(self, trainer: Trainer) -> None:
        if self.multipliers.grad is not None:
            self.multipliers.grad.neg_()

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        l1, l2 = self.multipliers.detach().tolist()
        return {**super().log_scalars(trainer), **_gate_scalars(self.masks),
                "train/lambda": l1, "train/lambda2": l2, "train/target_sparsity": self.current_target(trainer),
                "train/expected_sparsity": float(self._expected.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "multipliers": self.multipliers.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.multipliers.copy_(state["multipliers"])


def _gate_scalars(gates: dict[str, HardConcreteGate]) -> dict[str, float]:
    with torch.no_grad():
        values = {n: deterministic_gate(g.log_alpha) for n, g in gates.items()}
        return gate_scalars(values, expected_l0=float(mean_expected_l0(gates)))


@dataclass
class HardConcreteArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: hard_concrete"  # its --help section

    mask_weight_decay: float = field(default=1e-6, metadata={"help": "Weight decay of log_alpha (Robust Tickets)."})
    controller: Literal["fixed", "lagrangian"] = field(default="fixed", metadata={
        "help": "Hard-concrete L0 control: fixed | lagrangian"})
    l0_lambda: float = field(default=1.0, metadata={"help": "Fixed controller: final lambda of the L0 term."})
    lambda_ramp: tuple[float, float] = field(default=(0.1, 0.4), metadata={
        "help": "Fixed controller: ramp (fractions)."})
    lagrangian_lr: float = field(default=0.1, metadata={"help": "Lagrangian controller: multipliers' learning rate."})
    target_warmup: float = field(default=0.5, metadata={"help": "Lagrangian controller: target warm-up fraction."})

    def __post_init__(self) -> None:
        check_choice("controller", self.controller, CONTROLLERS)


def _fixed(gates: dict[str, HardConcreteGate], context: SearchContext, options: HardConcreteArguments) -> FixedLambda:
    start, end = options.lambda_ramp
    return FixedLambda(gates, lam=options.l0_lambda, lr=context.search.mask_lr,
                       weight_decay=options.mask_weight_decay, ramp_start=start, ramp_end=end)


def _lagrangian(gates: dict[str, HardConcreteGate], context: SearchContext,
                options: HardConcreteArguments) -> Lagrangian:
    return Lagrangian(gates, target=context.search.target_sparsity, lr=context.search.mask_lr,
                      lagrangian_lr=options.lagrangian_lr, warmup_fraction=options.target_warmup)


CONTROLLERS = {"fixed": _fixed, "lagrangian": _lagrangian}


FIXED_TARGET_WARNING = (
    "--target_sparsity {target:g} steers nothing under --controller fixed (the default): the sparsity the gates "
    "reach follows from --l0_lambda, --lambda_ramp, --mask_lr and the training length. The target is only recorded "
    "(metrics.json and the mask records' target_sparsity) and the ticket is compared with it (sparsity_warning); "
    "stage 3 retrains the ticket as found, or draws at its own --sparsity. Use --controller lagrangian to steer the "
    "search to the target.")


class HardConcreteSearch:
    """The builder: calling it attaches gates and trains them under the chosen controller; `check(search, options)`
    warns, before a stage writes anything (`subnets.masking.search.check_search`), that the fixed controller only
    records --target_sparsity (once per process and message, Python's default warning filter)."""

    @staticmethod
    def check(search: SharedSearchOptions, options: OptionGroups) -> None:
        if options[HardConcreteArguments].controller == "fixed":
            warnings.warn(FIXED_TARGET_WARNING.format(target=search.target_sparsity), UserWarning)

    def __call__(self, context: SearchContext) -> FoundMask:
        self.check(context.search, context.options)  # also for callers that skip check_search (subnets.attach)
        options = context.options[HardConcreteArguments]
        gates = attach_hard_concrete(context.model, context.targets, granularity=context.search.granularity)
        control: MaskSearchCallback = CONTROLLERS[options.controller](gates, context, options)
        return context.train_mask(control)


build_hard_concrete = HardConcreteSearch()
