"""Wanda (Sun et al. 2023): prune the lowest |W_ij| * ||X_j||_2 within each output row, no weight update."""

from __future__ import annotations

import torch

from ..calibration import InputStatistics
from ...sparsity import Pattern
from ..oneshot import MatrixPruner, PrunedMatrix, select, wanda_scores
from .oneshot import OneShotSearch


def _wanda(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    scores = wanda_scores(weight, stats.norms)
    return PrunedMatrix(select(scores, sparsity, pattern, per_row=True), state=scores)


WANDA = MatrixPruner("norms", _wanda, score=lambda weight, stats: wanda_scores(weight, stats.norms))

search_wanda = OneShotSearch(WANDA)
