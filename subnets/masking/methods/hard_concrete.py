"""Hard-concrete L0 gates (Louizos et al. 2018) under a fixed lambda ramp (Robust Tickets) or a Lagrangian
controller (CoFi / Wang et al. 2020) that drives the expected sparsity to the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...registry import check_choice
from ..callbacks import FixedLambda, Lagrangian, MaskSearchCallback
from ..hard_concrete import HardConcreteGate, attach_hard_concrete
from .context import FoundMask, SearchContext


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


def search_hard_concrete(context: SearchContext) -> FoundMask:
    options = context.options[HardConcreteArguments]
    gates = attach_hard_concrete(context.model, context.targets, granularity=context.search.granularity)
    control: MaskSearchCallback = CONTROLLERS[options.controller](gates, context, options)
    return context.train_mask(control)
