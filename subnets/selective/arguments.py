"""Command-line options of selective fine-tuning and the builder that turns them into training components."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from masks.store import check_store_root
from masks.store import store_root as mask_store_root
from subnets.config import TrainingArguments
from subnets.errors import SubnetsError
from subnets.training import Callback, Objective, OptimizerFactory

from .recording import UpdateMaskRecorder
from .roast import DEFAULT_MIN_KEEP, RoastAdamW, RoastCallback, RoastMasks
from .rose import RoseAdamW, RoseCallback, RoseFirstObjective, RoseMasks

SELECTIVE_METHODS = ("none", "rose_first", "rose_second", "rose_ensemble", "roast")


@dataclass
class SelectiveArguments:
    selective: str = field(default="none", metadata={
        "help": "Selective fine-tuning: none | rose_first | rose_second | rose_ensemble (ROSE, per-step masks over "
                "encoder weight tensors) | roast (RoAST's Fisher-ranked, sampled gradient masks; pair it with "
                "--adversary roast)."})
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
    update_mask_every: int = field(default=50, metadata={
        "help": "Log the update masks to the mask store every N steps (RoAST: once per epoch, when they change)."})
    update_mask_store: str | None = field(default=None, metadata={
        "help": "Mask store for the update masks (default: $SUBNETS_MASK_STORE, else ./masks_store)."})


@dataclass
class SelectiveSetup:
    """What the training loop needs for the chosen method; all empty/None for `--selective none`."""

    optimizer_factory: OptimizerFactory | None = None
    callbacks: list[Callback] = field(default_factory=list)
    objective: Objective | None = None


def _adamw_options(args: TrainingArguments) -> dict[str, Any]:
    return dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                weight_decay=args.weight_decay)


def build_selective(args: SelectiveArguments, *, seed: int = 0, objective_args: Any = None) -> SelectiveSetup:
    """The optimizer factory, callbacks and (for ROSE-First/Ensemble) objective of `args.selective`.

    The callback binds the method to the trainer's model in `on_train_begin`, before the optimizer is built.
    ROSE-First/Ensemble replace the training objective (two dropout passes), so they cannot be combined with an
    adversarial or debiasing objective (checked against `objective_args`, the stage's ObjectiveArguments);
    ROSE-Second and RoAST work with any objective.
    """
    if args.selective not in SELECTIVE_METHODS:
        raise SubnetsError(f"--selective must be one of {', '.join(SELECTIVE_METHODS)}, got '{args.selective}'.")
    if args.selective in ("rose_first", "rose_ensemble") and objective_args is not None:
        for option in ("adversary", "debias"):
            if getattr(objective_args, option, "none") != "none":
                raise SubnetsError(f"--selective {args.selective} trains with its own two-dropout-pass objective; "
                                   f"expected --{option} none (use rose_second to combine ROSE with --{option}).")
    if args.selective == "none":
        return SelectiveSetup()
    check_store_root(mask_store_root(args.update_mask_store))
    recorder = UpdateMaskRecorder(args.selective, mask_store_root(args.update_mask_store), args.update_mask_every)
    if args.selective == "roast":
        if math.isnan(args.roast_beta):
            raise SubnetsError("--roast_beta must be a positive number or inf, got nan.")
        roast = RoastMasks(alpha=args.roast_alpha, beta=args.roast_beta, min_keep=args.roast_min_keep,
                           refresh=args.roast_refresh_fisher, seed=seed)

        def roast_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
            return RoastAdamW(groups, roast=roast, **_adamw_options(training))

        return SelectiveSetup(roast_optimizer, [RoastCallback(roast, recorder, fisher_batches=args.roast_fisher_batches)])
    rose = RoseMasks(args.selective.removeprefix("rose_"), lower=args.rose_lower, upper=args.rose_upper,
                     gamma=args.rose_gamma, elementwise=args.rose_elementwise)

    def rose_optimizer(groups: list[dict[str, Any]], training: TrainingArguments) -> torch.optim.Optimizer:
        return RoseAdamW(groups, rose=rose, **_adamw_options(training))

    objective = RoseFirstObjective(rose, args.rose_score_examples) if rose.uses_first_order else None
    return SelectiveSetup(rose_optimizer, [RoseCallback(rose, recorder)], objective)
