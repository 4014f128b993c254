"""Product of experts (Clark et al. 2019; He et al. 2019; docs/methods.md, debiasing losses): the model is trained
through its product with the cached bias-only predictions (`--bias_predictions`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..context import DebiasContext
from ..losses import LossFn
from ..predictions import JoinedLoss, bias_predictions


def poe_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """CE(log_softmax(f(x)) + log p_b(x), y)."""
    combined = F.log_softmax(logits.float(), dim=-1) + bias_probs.clamp_min(1e-12).log()
    return F.cross_entropy(combined, labels)


def build_poe(context: DebiasContext) -> LossFn:
    return JoinedLoss(poe_loss, bias_predictions(context))
