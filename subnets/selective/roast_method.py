"""RoAST's selective gradient masks (Kim et al. 2023; Child-Tuning-D with beta inf): option group and builder."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.registry import OptionGroups
from subnets.training import TrainingParts

from .roast import DEFAULT_MIN_KEEP, RoastAdamW, RoastCallback, RoastMasks
from .setup import SelectiveContext, adamw_options


@dataclass
class RoastArguments:
    config_group = "SelectiveArguments"
    _argument_group_name = "selective optimizer: roast"  # its --help section
    allow_inf = ("roast_beta",)  # inf: Child-Tuning-D (see subnets.config.check_finite)

    roast_alpha: float = field(default=0.9, metadata={
        "help": "RoAST: keep probability sigmoid(2 beta (s - alpha)) of an element with relative Fisher rank s "
                "(sentiment 0.9, entailment 0.6)."})
    roast_beta: float = field(default=10.0, metadata={
        "help": "RoAST: sharpness (sentiment 10, entailment 1); inf gives Child-Tuning-D's hard top-(1-alpha) mask."})
    roast_min_keep: float = field(default=DEFAULT_MIN_KEEP, metadata={
        "help": "RoAST: floor on the keep probability, bounding the unbiased 1/p rescale by 1/min_keep."})
    roast_refresh_fisher: bool = field(default=True, metadata={
        "help": "RoAST: re-estimate the Fisher from each epoch's gradients (false: keep the initial pass, as "
                "Child-Tuning-D)."})
    roast_fisher_batches: int = field(default=0, metadata={
        "help": "RoAST: batches of the initial clean Fisher pass (0: the whole training set)."})

    def __post_init__(self) -> None:
        if math.isnan(self.roast_beta):
            raise SubnetsError("--roast_beta must be a positive number or inf, got nan.")


def build_roast(options: OptionGroups, context: SelectiveContext) -> TrainingParts:
    args = options[RoastArguments]
    roast = RoastMasks(alpha=args.roast_alpha, beta=args.roast_beta, min_keep=args.roast_min_keep,
                       refresh=args.roast_refresh_fisher, seed=context.seed)

    def roast_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
        return RoastAdamW(groups, roast=roast, **adamw_options(training))

    callback = RoastCallback(roast, context.recorder, fisher_batches=args.roast_fisher_batches)
    return TrainingParts(roast_optimizer, [callback])
