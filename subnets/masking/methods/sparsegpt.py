"""SparseGPT (Frantar & Alistarh 2023): an approximate OBS solve per layer that prunes and updates the remaining
weights; the updated model is the run's checkpoint-best/ (the ticket's `weights`)."""

from __future__ import annotations

import torch

from ..calibration import InputStatistics
from ...sparsity import Pattern
from ..oneshot import MatrixPruner, PrunedMatrix, sparsegpt_prune
from .oneshot import OneShotSearch


def _sparsegpt(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    updated, kept = sparsegpt_prune(weight, stats.hessian, sparsity, pattern)
    return PrunedMatrix(kept, weight=updated)


SPARSEGPT = MatrixPruner("hessian", _sparsegpt)

search_sparsegpt = OneShotSearch(SPARSEGPT)
