"""Baselines without training: a random mask, and one-shot magnitude pruning (|W|; a one-shot method, so it
takes --pattern and --layer_budget, see `oneshot.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..baselines import random_mask
from ..calibration import InputStatistics
from ...sparsity import Pattern
from ..oneshot import MatrixPruner, PrunedMatrix, select
from ...weights import apply_masks
from .context import FoundMask, SearchContext
from .oneshot import OneShotSearch


@dataclass
class RandomArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: random"  # its --help section

    mask_seed: int = field(default=0, metadata={"help": "Seed of the random baseline."})


def search_random(context: SearchContext) -> FoundMask:
    search = context.search
    ticket = random_mask(context.targets, search.target_sparsity, scope=search.scope,
                         seed=context.options[RandomArguments].mask_seed)
    apply_masks(context.model, ticket)
    return FoundMask(ticket, None, context.make_trainer(context.output_dir, []).evaluate())


def _magnitude(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    """The |w| ranking is the state: drawing from it gives the magnitude ticket of any sparsity."""
    scores = weight.abs()
    return PrunedMatrix(select(scores, sparsity, pattern, per_row=False), state=scores)


MAGNITUDE = MatrixPruner("none", _magnitude, score=lambda weight, stats: weight.abs())

search_magnitude = OneShotSearch(MAGNITUDE)
