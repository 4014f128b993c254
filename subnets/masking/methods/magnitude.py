"""Magnitude pruning: prune the lowest |W|, per matrix or globally (`magnitude_mask`; as a one-shot method,
`--method magnitude`, it also takes --pattern and --layer_budget, see `subnets.masking.oneshot`), and the
one-shot structured baseline of whole heads and FFN neurons by their L1 norm (`magnitude_structured_masks`, for
compact export)."""

from __future__ import annotations

from typing import Iterable

import torch

from ...errors import SubnetsError
from ...sparsity import Pattern
from ...targets import Target
from ...weights import require_plain
from ..base import target_weights
from ..calibration import InputStatistics
from ..draw import draw_mask
from ..layout import UnitMasks, UnitSlice, encoder_layers, unit_scores
from ..oneshot import MatrixPruner, OneShotSearch, PrunedMatrix, select


def magnitude_mask(
    model: torch.nn.Module, targets: Iterable[Target], sparsity: float, *, scope: str = "per_matrix"
) -> dict[str, torch.Tensor]:
    """Prune the smallest |W|, per matrix (layer-wise) or globally."""
    return draw_mask({n: w.abs() for n, w in target_weights(model, targets).items()}, sparsity, scope=scope)


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


def _top_units(scores: torch.Tensor, keep: float) -> torch.Tensor:
    kept = torch.zeros(len(scores), dtype=torch.bool)
    kept[scores.topk(round(keep * len(scores))).indices.cpu()] = True
    return kept


def _magnitude(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    """The |w| ranking is the state: drawing from it gives the magnitude ticket of any sparsity."""
    scores = weight.abs()
    return PrunedMatrix(select(scores, sparsity, pattern, per_row=False), state=scores)


MAGNITUDE = MatrixPruner("none", _magnitude, score=lambda weight, stats: weight.abs())

build_magnitude = OneShotSearch(MAGNITUDE)
