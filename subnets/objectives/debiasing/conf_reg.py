"""Confidence regularisation (Utama et al. 2020; docs/methods.md, debiasing losses): distillation from a
fine-tuned teacher's predictions (`--teacher_predictions`), softened where the bias-only model
(`--bias_predictions`) is right."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..context import DebiasContext
from ..losses import LossFn
from ..predictions import JoinedLoss, bias_predictions, load_predictions


@dataclass
class TeacherPredictionArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "debiasing: teacher (distillation)"  # its --help section

    teacher_predictions: str | None = field(default=None, metadata={
        "help": "conf_reg: a fine-tuned teacher's predictions for the training split "
                "(subnets-bias-model --teacher_model RUN_DIR)."})


def conf_reg_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor,
                  teacher_probs: torch.Tensor) -> torch.Tensor:
    """Utama et al. 2020, Eq. 2-3: distil from the teacher's probabilities scaled as p_t^(1 - p_b[y]) and
    renormalised, so examples the bias model gets right get a softer target."""
    exponent = 1 - bias_probs.gather(1, labels[:, None])
    scaled = teacher_probs.clamp_min(1e-12) ** exponent
    target = scaled / scaled.sum(dim=-1, keepdim=True)
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def build_conf_reg(context: DebiasContext) -> LossFn:
    bias = bias_predictions(context)
    teacher = load_predictions(context.options[TeacherPredictionArguments].teacher_predictions, "teacher_predictions",
                               "teacher", context.task, context.train_dataset)
    return JoinedLoss(conf_reg_loss, bias, teacher)
