"""Drawing a binary mask at an exact target sparsity from any real-valued mask state.

The lowest-ranked weights are pruned: globally over all targets, or within each matrix. Ranks come from a
stable sort, so the count is exact to the weight even with tied values (e.g. hard-init scores, or group states
expanded to weight shape; a group on the boundary may then be split). A state of a structured search draws whole
units instead (`draw_units`): a head's Q/K/V rows and attention-output columns together, a neuron's FFN rows and
FFN-out column together, so compact export can remove them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..errors import SubnetsError
from .layout import EncoderLayer, UnitSlice

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


def draw_units(state: Mapping[str, torch.Tensor], sparsity: float, layers: Sequence[EncoderLayer], granularity: str,
               *, scope: str = "global") -> dict[str, torch.Tensor]:
    """Bool masks (True = kept) removing whole head units and/or FFN neurons of a `head` / `neuron` / `structured`
    state (weight-shaped, as the store keeps it); `layers` from `layout.encoder_layers(model)`.

    A unit's value is the mean of the state over all its weights in every matrix it spans. `global`: units are
    pruned lowest first while that brings the pruned weights closer to round(sparsity * n) (n: the state's
    weights), so the sparsity is exact up to one unit; `per_matrix`: each block's heads and its neurons are ranked
    apart, pruning round(sparsity * units) of each.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise SubnetsError(f"Target sparsity {sparsity} is out of range; expected a fraction in [0, 1].")
    if scope not in SCOPES:
        raise SubnetsError(f"Unknown ranking scope '{scope}'; expected one of {', '.join(SCOPES)}.")
    groups: list[list[UnitSlice]] = []
    for layer in layers:
        for slices, kind in ((layer.heads, "head"), (layer.neurons, "neuron")):
            present = [s for s in slices if s.target.name in state]
            if granularity in (kind, "structured") and present:
                groups.append(present)
    covered = {s.target.name for group in groups for s in group}
    stray = sorted(set(state) - covered)
    if stray or not groups:
        raise SubnetsError(f"A {granularity} mask state draws whole heads and neurons, but "
                           f"{stray[0] if stray else 'none of its matrices'} is not part of one; expected the state "
                           f"of a {granularity} search on this model (or --granularity weight records).")
    for name in covered:
        wanted = next(s.target.shape for group in groups for s in group if s.target.name == name)
        if tuple(state[name].shape) != tuple(wanted):
            raise SubnetsError(f"Mask state '{name}' has shape {tuple(state[name].shape)}; expected {tuple(wanted)}.")
    means, sizes = [], []
    for group in groups:
        blocks = [s.blocks(state[s.target.name].detach().float().cpu()) for s in group]
        size = sum(b.shape[1] for b in blocks)
        means.append(sum(b.sum(dim=1) for b in blocks) / size)
        sizes.append(size)
    if scope == "per_matrix":
        kept = [prune_lowest(m, int(round(sparsity * m.numel()))) for m in means]
    else:
        flat = torch.cat(means)
        weights = torch.cat([torch.full((m.numel(),), size, dtype=torch.float64) for m, size in zip(means, sizes)])
        order = torch.argsort(flat, stable=True)
        pruned = torch.cat([torch.zeros(1, dtype=torch.float64), weights[order].cumsum(0)])
        target = pruned_count(sum(t.numel() for t in state.values()), sparsity)
        count = int(torch.argmin((pruned - target).abs()))  # the first of equally close counts
        all_kept = torch.ones_like(flat, dtype=torch.bool)
        all_kept[order[:count]] = False
        kept = list(all_kept.split([m.numel() for m in means]))
    masks = {name: torch.ones(state[name].shape, dtype=torch.bool) for name in state}
    for group, keep in zip(groups, kept):
        for piece in group:
            masks[piece.target.name].index_fill_(piece.axis, piece.channels(~keep), False)
    return masks
