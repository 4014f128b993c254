"""Baseline masks: random and one-shot magnitude pruning, drawn at an exact sparsity, and the one-shot magnitude
baseline of whole heads and FFN neurons (structured, for compact export)."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch

from ..errors import SubnetsError
from ..targets import Target
from ..weights import require_plain
from .draw import draw_mask
from .layout import UnitMasks, UnitSlice, encoder_layers


def target_weights(model: torch.nn.Module, targets: Iterable[Target]) -> dict[str, torch.Tensor]:
    """The current values of the target weights (parametrized weights give their masked values)."""
    modules = dict(model.named_modules())
    return {t.name: modules[t.module_name].weight.detach() for t in targets}


def magnitude_mask(
    model: torch.nn.Module, targets: Iterable[Target], sparsity: float, *, scope: str = "per_matrix"
) -> dict[str, torch.Tensor]:
    """Prune the smallest |W|, per matrix (layer-wise) or globally."""
    return draw_mask({n: w.abs() for n, w in target_weights(model, targets).items()}, sparsity, scope=scope)


def random_mask(
    targets: Iterable[Target], sparsity: float, *, scope: str = "per_matrix", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Prune uniformly random weights (reproducible by `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    state = {t.name: torch.rand(t.shape, generator=generator) for t in targets}
    return draw_mask(state, sparsity, scope=scope)


@torch.no_grad()
def magnitude_structured_masks(
    model: torch.nn.Module, keep_heads: float, keep_neurons: float
) -> tuple[UnitMasks, UnitMasks]:
    """Keep, per layer, the fraction `keep_heads` of head units and `keep_neurons` of FFN neurons with the largest
    L1 weight norm (a head unit: its Q/K/V rows and attention-output columns; a neuron: its FFN-in (and gate) row
    and FFN-out column).
    A one-shot structured baseline, also used by the compact-export benchmark (`subnets.export`)."""
    for name, value in (("keep_heads", keep_heads), ("keep_neurons", keep_neurons)):
        if not 0.0 <= value <= 1.0:
            raise SubnetsError(f"{name} is {value}; expected a fraction between 0 and 1.")
    require_plain(model)
    modules = dict(model.named_modules())
    heads: UnitMasks = {}
    neurons: UnitMasks = {}
    for index, layer in enumerate(encoder_layers(model)):
        heads[index] = _top_units(_unit_norms(modules, layer.heads), keep_heads)
        neurons[index] = _top_units(_unit_norms(modules, layer.neurons), keep_neurons)
    return heads, neurons


def _unit_norms(modules: dict[str, torch.nn.Module], slices: tuple[UnitSlice, ...]) -> torch.Tensor:
    """L1 norm of each unit over every matrix slice it spans."""
    return unit_scores(slices, {s.target.name: modules[s.target.module_name].weight.abs() for s in slices})


def unit_scores(slices: tuple[UnitSlice, ...], scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Per unit (head unit or FFN neuron), the sum of the per-weight `scores` (by target name, weight-shaped) over
    every matrix slice it spans."""
    return sum(s.blocks(scores[s.target.name].float()).sum(1) for s in slices)


def _top_units(scores: torch.Tensor, keep: float) -> torch.Tensor:
    kept = torch.zeros(len(scores), dtype=torch.bool)
    kept[scores.topk(round(keep * len(scores))).indices.cpu()] = True
    return kept
