"""SparseGPT (Frantar & Alistarh 2023): an approximate OBS solve per layer that prunes and updates the remaining
weights; the updated model is the run's checkpoint-best/ (the ticket's `weights`)."""

from __future__ import annotations

import torch

from ..calibration import InputStatistics
from ..oneshot import MatrixPruner, Pattern, PrunedMatrix, sparsegpt_prune
from .context import FoundMask, SearchContext
from .oneshot import search_one_shot


def _sparsegpt(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    updated, kept = sparsegpt_prune(weight, stats.hessian, sparsity, pattern)
    return PrunedMatrix(kept, weight=updated)


SPARSEGPT = MatrixPruner("hessian", _sparsegpt)


def search_sparsegpt(context: SearchContext) -> FoundMask:
    return search_one_shot(context, SPARSEGPT)
