"""Wanda (Sun et al. 2023): prune the lowest |W_ij| * ||X_j||_2 within each output row, no weight update.
docs/methods.md, "One-shot pruning". The score (`wanda_scores`) lives with the shared one-shot machinery
(`subnets.masking.oneshot`), whose OWL layer budgets rank layers by it for every one-shot method."""

from __future__ import annotations

import torch

from ...sparsity import Pattern
from ..calibration import InputStatistics
from ..oneshot import MatrixPruner, OneShotSearch, PrunedMatrix, select, wanda_scores


def _wanda(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    scores = wanda_scores(weight, stats.norms)
    return PrunedMatrix(select(scores, sparsity, pattern, per_row=True), state=scores)


WANDA = MatrixPruner("norms", _wanda, score=lambda weight, stats: wanda_scores(weight, stats.norms))

build_wanda = OneShotSearch(WANDA)
