"""Command-line options of the robust objectives (shared by every stage) and the objective factory.

`--adversary` and `--debias` choose from `adversaries.ADVERSARIES` and `debiasing.DEBIAS_LOSSES` (name -> option
groups + builder); adding one is a new file in that folder with its option group and builder plus one registry
line (docs/objectives.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import SubnetsError
from ..registry import OptionGroups, check_choice, choices, option_groups
from ..tasks import TaskSpec
from ..training import Objective
from .adversaries import ADVERSARIES
from .context import AdversaryContext, DebiasContext
from .debiasing import DEBIAS_LOSSES
from .losses import LossFn, smoothed_cross_entropy

AdversaryName = choices(ADVERSARIES)
DebiasName = choices(DEBIAS_LOSSES)


@dataclass
class ObjectiveArguments:
    """The choice of adversary and debiasing loss; their options are in their own groups (`objective_arguments`)."""
    _argument_group_name = "adversary and debiasing (objective)"  # its --help section

    adversary: AdversaryName = field(default="none", metadata={
        "help": "Adversarial training in embedding space: none | freelb (Robust Tickets) | pgd | roast (RoAST's "
                "single step on the embedding output)."})
    debias: DebiasName = field(default="none", metadata={
        "help": "Debiasing loss (SRNets): none | poe (product of experts) | reweight | conf_reg (confidence "
                "regularisation; needs --teacher_predictions)."})

    def __post_init__(self) -> None:
        check_choice("adversary", self.adversary, ADVERSARIES)
        check_choice("debias", self.debias, DEBIAS_LOSSES)


def objective_arguments() -> list[type]:
    """The argument dataclasses of the objective options: the choices and every registered method's group."""
    return [ObjectiveArguments, *option_groups(ADVERSARIES, DEBIAS_LOSSES)]


def build_loss(args: ObjectiveArguments, task: TaskSpec, train_dataset: Any, label_smoothing: float = 0.0, *,
               options: Iterable[Any] | OptionGroups = ()) -> LossFn:
    """The per-batch loss: cross-entropy (label-smoothed if asked), or a debiasing loss joined to cached
    predictions by example id. `options`: the parsed option groups (defaults for those not given)."""
    if label_smoothing:
        if args.debias != "none":
            raise SubnetsError("--label_smoothing_factor applies to plain cross-entropy; expected 0 with --debias.")
        return smoothed_cross_entropy(label_smoothing)
    groups = options if isinstance(options, OptionGroups) else OptionGroups(options)
    return DEBIAS_LOSSES[args.debias].build(DebiasContext(groups, task, train_dataset))


def build_objective(args: ObjectiveArguments, task: TaskSpec, train_dataset: Any, label_smoothing: float = 0.0, *,
                    options: Iterable[Any] | OptionGroups = ()) -> Objective:
    """The training objective (`objective(model, batch, loss_scale) -> detached loss`) for these options.

    `train_dataset` (tokenised or not) must carry `idx` and labels when a debiasing loss is chosen; the
    cached predictions are checked against it here, once. `options`: the parsed option groups of the adversary
    and debiasing loss (`AscentArguments(adv_steps=3)`, ...; defaults for those not given).
    """
    groups = options if isinstance(options, OptionGroups) else OptionGroups(options)
    loss_fn = build_loss(args, task, train_dataset, label_smoothing, options=groups)
    return ADVERSARIES[args.adversary].build(AdversaryContext(groups, loss_fn))
