"""ROSE (Jiang et al. 2022) as a selective method: option group and builder of its three variants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.registry import OptionGroups
from subnets.training import TrainingParts

from .rose import RoseAdamW, RoseCallback, RoseFirstObjective, RoseMasks
from .setup import SelectiveContext, adamw_options


@dataclass
class RoseArguments:
    config_group = "SelectiveArguments"
    _argument_group_name = "selective optimizer: rose"  # its --help section

    rose_lower: float = field(default=0.0, metadata={
        "help": "ROSE: lower percentile (0-100) of the per-tensor scores; tensors below it are frozen for the step."})
    rose_upper: float = field(default=100.0, metadata={
        "help": "ROSE: upper percentile (0-100); tensors scoring above it are frozen for the step."})
    rose_gamma: float = field(default=0.5, metadata={
        "help": "ROSE-Ensemble: M = (1 - gamma) M_second + gamma M_first."})
    rose_score_examples: int | None = field(default=None, metadata={
        "help": "ROSE-First/Ensemble: score with the dropout-KL gradient of the first N examples of each batch "
                "(default: a quarter of the batch, which selects the same tensors as the exact score as often as "
                "two exact scores agree, see docs/selective.md; 0: all, exact as in the paper)."})
    rose_elementwise: bool = field(default=False, metadata={
        "help": "ROSE: one mask value per weight element (percentiles per tensor) instead of one per tensor."})


def build_rose(options: OptionGroups, context: SelectiveContext) -> TrainingParts:
    """`context.name` is rose_first, rose_second or rose_ensemble. ROSE-First/Ensemble replace the training
    objective (two dropout passes), so they refuse an adversarial or debiasing objective."""
    args, variant = options[RoseArguments], context.name.removeprefix("rose_")
    rose = RoseMasks(variant, lower=args.rose_lower, upper=args.rose_upper, gamma=args.rose_gamma,
                     elementwise=args.rose_elementwise)
    if rose.uses_first_order and context.objective_args is not None:
        for option in ("adversary", "debias"):
            if getattr(context.objective_args, option, "none") != "none":
                raise SubnetsError(f"--selective {context.name} trains with its own two-dropout-pass objective; "
                                   f"expected --{option} none (use rose_second to combine ROSE with --{option}).")

    def rose_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
        return RoseAdamW(groups, rose=rose, **adamw_options(training))

    objective = RoseFirstObjective(rose, args.rose_score_examples) if rose.uses_first_order else None
    return TrainingParts(rose_optimizer, [RoseCallback(rose, context.recorder)], objective)
