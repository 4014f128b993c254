"""Per-batch losses on logits, and the single-pass objective that backpropagates one of them."""

from __future__ import annotations

from typing import Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..training import Objective
from .modules import split_batch


class LossFn(Protocol):
    """`loss(logits, batch) -> scalar`: batch carries `labels` and `idx` (for per-example bias look-ups)."""

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


def cross_entropy(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy, computed in float32 (logits may be bf16 under autocast)."""
    return F.cross_entropy(logits.float(), batch["labels"])


def smoothed_cross_entropy(factor: float) -> LossFn:
    """Cross-entropy against smoothed targets (1 - factor) * one-hot + factor / num_labels (Szegedy et al. 2016,
    Sec. 7), as HF's `label_smoothing_factor`."""
    def loss(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"], label_smoothing=factor)

    return loss


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p) summed over the batch: RoAST's consistency term as is, ROSE's scores scaled by
    `selective.methods.rose.ROSE_KL_SCALE`. Computed in float32 as sum((p - q)(log p - log q)), the two KLs in one
    pass."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum()


class LossObjective(Objective):
    """One forward and one backward pass of `loss_fn` (CE by default, or a debiasing loss)."""

    def __init__(self, loss_fn: LossFn = cross_entropy) -> None:
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], loss_scale: float = 1.0) -> torch.Tensor:
        inputs, _ = split_batch(batch)
        loss = self.loss_fn(model(**inputs).logits, batch)
        (loss * loss_scale).backward()
        return loss.detach()
