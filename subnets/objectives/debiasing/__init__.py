"""The built-in debiasing losses' option groups and builders (registered in `arguments.DEBIAS_LOSSES`): each loss
is joined by example id to cached predictions for the training split, checked once when it is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SubnetsError
from ..registry import OptionGroups
from ..tasks import TaskSpec
from .debias import ConfRegLoss, PoELoss, PredictionCache, ReweightLoss
from .losses import LossFn


@dataclass
class BiasPredictionArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "debiasing: bias model (poe, ...)"  # its --help section

    bias_predictions: str | None = field(default=None, metadata={
        "help": "Bias-only predictions for the training split (bias_predictions.safetensors from "
                "pipelines/train_bias_model.py)."})


@dataclass
class TeacherPredictionArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "debiasing: teacher (distillation)"  # its --help section

    teacher_predictions: str | None = field(default=None, metadata={
        "help": "conf_reg: a fine-tuned teacher's predictions for the training split "
                "(pipelines/train_bias_model.py --teacher_model RUN_DIR)."})


def _load_checked(path: str | None, option: str, kind: str, task: TaskSpec, train_dataset: Any) -> PredictionCache:
    if not path:
        raise SubnetsError(f"This --debias choice needs --{option} (a predictions file for the training split).")
    cache = PredictionCache.load(path)
    if cache.kind != kind:
        raise SubnetsError(f"--{option} {path} holds {cache.kind} predictions; expected {kind} predictions.")
    cache.check_alignment(train_dataset, task.name, len(task.label_names), source=f"Predictions in {path}")
    return cache


def bias_predictions(options: OptionGroups, task: TaskSpec, train_dataset: Any) -> PredictionCache:
    return _load_checked(options[BiasPredictionArguments].bias_predictions, "bias_predictions", "bias", task,
                         train_dataset)


def build_poe(options: OptionGroups, task: TaskSpec, train_dataset: Any) -> LossFn:
    return PoELoss(bias_predictions(options, task, train_dataset))


def build_reweight(options: OptionGroups, task: TaskSpec, train_dataset: Any) -> LossFn:
    return ReweightLoss(bias_predictions(options, task, train_dataset))


def build_conf_reg(options: OptionGroups, task: TaskSpec, train_dataset: Any) -> LossFn:
    bias = bias_predictions(options, task, train_dataset)
    teacher = _load_checked(options[TeacherPredictionArguments].teacher_predictions, "teacher_predictions", "teacher",
                            task, train_dataset)
    return ConfRegLoss(bias, teacher)
