"""Drawing a binary mask at an exact target sparsity from any real-valued mask state.

The lowest-ranked weights are pruned: globally over all targets, or within each matrix. Ranks come from a
stable sort, so the count is exact to the weight even with tied values (e.g. hard-init scores, or group states
expanded to weight shape; a group on the boundary may then be split).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import SubnetsError

SCOPES = ("global", "per_matrix")


def pruned_count(numel: int, sparsity: float) -> int:
    """round(sparsity * numel): the exact number of weights a drawn mask prunes."""
    return int(round(sparsity * numel))


def draw_mask(
    state: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    scope: str = "global",
    keep_pruned: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Bool masks (True = kept) pruning exactly round(sparsity * n) of the lowest `state` values.

    `n` is the number of weights over all targets (`global`) or of each matrix (`per_matrix`). Weights already
    pruned in `keep_pruned` stay pruned and count towards the sparsity (iterative pruning).
    """
    if not 0.0 <= sparsity <= 1.0:
        raise SubnetsError(f"Target sparsity {sparsity} is out of range; expected a fraction in [0, 1].")
    if scope not in SCOPES:
        raise SubnetsError(f"Unknown ranking scope '{scope}'; expected one of {', '.join(SCOPES)}.")
    if not state:
        raise SubnetsError("Cannot draw a mask from an empty mask state; expected at least one target.")
    ranked = {}
    for name, values in state.items():
        values = values.detach().float()
        if keep_pruned is not None:
            values = values.masked_fill(~keep_pruned[name].to(values.device), float("-inf"))
        ranked[name] = values
    if scope == "per_matrix":
        return {name: prune_lowest(values.flatten(), pruned_count(values.numel(), sparsity)).view_as(values)
                for name, values in ranked.items()}
    flat = torch.cat([v.flatten() for v in ranked.values()])
    kept = prune_lowest(flat, pruned_count(flat.numel(), sparsity))
    masks, offset = {}, 0
    for name, values in ranked.items():
        masks[name] = kept[offset:offset + values.numel()].view_as(values)
        offset += values.numel()
    return masks


def prune_lowest(values: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of a flat tensor keeping all but its `count` lowest values (stable ranking: exact with ties)."""
    kept = torch.ones_like(values, dtype=torch.bool)
    if count:
        kept[torch.argsort(values, stable=True)[:count]] = False
    return kept
