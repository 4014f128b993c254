"""What the builders of the two objective families receive: `AdversaryContext` (-> an `Objective`) and
`DebiasContext` (-> a per-batch `LossFn`), each with the parsed option groups of the stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..registry import OptionGroups
from ..tasks import TaskSpec
from .losses import LossFn


@dataclass
class AdversaryContext:
    """The adversary's option groups (`options[AscentArguments]`, ...) and the per-batch loss it perturbs (cross-
    entropy, or the chosen debiasing loss)."""

    options: OptionGroups
    loss_fn: LossFn


@dataclass
class DebiasContext:
    """The debiasing loss's option groups (`options[BiasPredictionArguments]`, ...), the task and the training split
    (tokenised or not, with `idx` and labels) its cached predictions are checked against."""

    options: OptionGroups
    task: TaskSpec
    train_dataset: Any
