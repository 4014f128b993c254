"""One-shot baselines: a random mask and a magnitude mask, applied and evaluated without training."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..baselines import magnitude_mask, random_mask, target_weights
from ...weights import apply_masks
from .context import FoundMask, SearchContext


@dataclass
class RandomArguments:
    config_group = "SearchArguments"

    mask_seed: int = field(default=0, metadata={"help": "Seed of the random baseline."})


def _evaluate(context: SearchContext, ticket: dict[str, torch.Tensor],
              state: dict[str, torch.Tensor] | None) -> FoundMask:
    apply_masks(context.model, ticket)
    return FoundMask(ticket, state, context.make_trainer(context.output_dir, []).evaluate())


def search_random(context: SearchContext) -> FoundMask:
    search = context.search
    ticket = random_mask(context.targets, search.target_sparsity, scope=search.scope,
                         seed=context.options[RandomArguments].mask_seed)
    return _evaluate(context, ticket, None)


def search_magnitude(context: SearchContext) -> FoundMask:
    """The |w| ranking is the state: drawing from it gives the magnitude ticket of any sparsity."""
    ticket = magnitude_mask(context.model, context.targets, context.search.target_sparsity, scope=context.search.scope)
    state = {n: w.abs().float() for n, w in target_weights(context.model, context.targets).items()}
    return _evaluate(context, ticket, state)
