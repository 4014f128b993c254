"""Example reweighting (Schuster et al. 2019; docs/methods.md, debiasing losses): examples the bias-only model
(`--bias_predictions`) gets right weigh less."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import DebiasContext
from ..losses import LossFn
from ..predictions import JoinedLoss, bias_predictions


def reweight_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """sum_i w_i CE_i / sum_i w_i with w_i = 1 - p_b(x_i)[y_i]."""
    weights = 1 - bias_probs.gather(1, labels[:, None]).squeeze(1)
    per_example = F.cross_entropy(logits.float(), labels, reduction="none")
    return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)


def build_reweight(context: DebiasContext) -> LossFn:
    return JoinedLoss(reweight_loss, bias_predictions(context))
