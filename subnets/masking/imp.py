"""Iterative magnitude pruning (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks";
SRNets' IMP).

Each round prunes the lowest |W| among the surviving weights, layer-wise or globally, to the round's sparsity;
then surviving weights may be rewound to a reference state (pre-trained, fine-tuned, or step-k weights). The
classifier head is never rewound (it keeps its trained values), as in the lottery-ticket reference.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..models import classifier_modules
from ..targets import Target
from ..weights import apply_masks
from .baselines import target_weights
from .draw import draw_mask

DEFAULT_RATE = 0.1


def imp_sparsity(round_index: int, rate: float = DEFAULT_RATE) -> float:
    """Sparsity after `round_index` rounds that each prune `rate` of the remaining weights: 10%, 19%, 27.1%, ..."""
    return 1.0 - (1.0 - rate) ** round_index


def imp_prune(
    model: torch.nn.Module,
    targets: Iterable[Target],
    mask: Mapping[str, torch.Tensor] | None,
    round_index: int,
    *,
    scope: str = "per_matrix",
    rate: float = DEFAULT_RATE,
) -> dict[str, torch.Tensor]:
    """The mask after round `round_index` (1-based): previously pruned weights stay pruned."""
    magnitudes = {n: w.abs() for n, w in target_weights(model, targets).items()}
    return draw_mask(magnitudes, imp_sparsity(round_index, rate), scope=scope, keep_pruned=mask)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter (a rewind point)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def rewind(model: torch.nn.Module, reference: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> None:
    """Reset every parameter except the classifier head to `reference`, then zero the pruned weights."""
    head = {id(p) for m in classifier_modules(model) for p in m.parameters()}
    for name, param in model.named_parameters():
        if id(param) not in head and name in reference:
            param.copy_(reference[name])
    apply_masks(model, mask)
