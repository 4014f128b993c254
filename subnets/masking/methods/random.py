"""The random baseline: prune uniformly random weights at an exact sparsity, per matrix or globally (no training;
the ticket is applied and evaluated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from ...targets import Target
from ...weights import apply_masks
from ..draw import draw_mask
from ..search_context import FoundMask, SearchContext


def random_mask(
    targets: Iterable[Target], sparsity: float, *, scope: str = "per_matrix", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Prune uniformly random weights (reproducible by `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    state = {t.name: torch.rand(t.shape, generator=generator) for t in targets}
    return draw_mask(state, sparsity, scope=scope)


@dataclass
class RandomArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: random"  # its --help section

    mask_seed: int = field(default=0, metadata={"help": "Seed of the random baseline."})


def build_random(context: SearchContext) -> FoundMask:
    search = context.search
    ticket = random_mask(context.targets, search.target_sparsity, scope=search.scope,
                         seed=context.options[RandomArguments].mask_seed)
    apply_masks(context.model, ticket)
    return FoundMask(ticket, None, context.make_trainer(context.output_dir, []).evaluate())
