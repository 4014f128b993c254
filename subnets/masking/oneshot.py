"""One-shot pruning from calibration statistics: Wanda scores, SparseGPT's approximate OBS solve, OWL's
outlier-weighted layer budgets, and `prune_one_shot`, which prunes a model layer by layer (per weight, N:M, or
whole heads and FFN neurons). docs/methods.md, "One-shot pruning".

A weight is `[out_features, in_features]` (a `torch.nn.Linear`); "input weights" of a row are its columns. A
pattern `N:M` (`subnets.sparsity`) keeps N weights in every group of M consecutive input weights of a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Sequence

import torch

from ..errors import SubnetsError
from ..sparsity import Pattern, format_pattern, nm_mask
from ..targets import Target, find_encoder_layers
from ..weights import require_plain
from .baselines import unit_scores
from .calibration import Batch, InputStatistics, input_statistics
from .draw import prune_lowest, pruned_count
from .layout import EncoderLayer, encoder_layers

# SparseGPT (Frantar & Alistarh 2023, Alg. 1): the mask is selected and the updates are applied in blocks of
# B_s = 128 columns, and H is dampened by 1% of its mean diagonal before the inverse (the reference code's
# defaults, IST-DASLab/sparsegpt: blocksize=128, percdamp=.01).
SPARSEGPT_BLOCK = 128
SPARSEGPT_DAMPENING = 0.01
# OWL (Yin et al. 2024): a weight is an outlier when its Wanda score exceeds M times its layer's mean score, and the
# layer sparsities span [target - lambda, target + lambda]; the defaults M = 5, lambda = 0.08 (as issue 24 cites
# them; the reference code's Hyper_m and Lamda).
OWL_THRESHOLD = 5.0
OWL_LAMBDA = 0.08


def lowest_pruned(scores: torch.Tensor, sparsity: float, dim: int | None = None) -> torch.Tensor:
    """Prune round(sparsity * n) lowest scores of the whole tensor (dim None) or of each slice along `dim`
    (a stable ranking, so the count is exact with ties)."""
    if dim is None:
        return prune_lowest(scores.flatten(), pruned_count(scores.numel(), sparsity)).view_as(scores)
    ranks = torch.argsort(torch.argsort(scores, dim=dim, stable=True), dim=dim)
    return ranks >= pruned_count(scores.shape[dim], sparsity)


def select(scores: torch.Tensor, sparsity: float, pattern: Pattern, *, per_row: bool) -> torch.Tensor:
    """The kept weights of one matrix: N:M groups, else the lowest scores per row or per matrix."""
    if pattern is not None:
        return nm_mask(scores, *pattern)
    return lowest_pruned(scores, sparsity, dim=1 if per_row else None)


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """Wanda (Sun et al. 2023, Eq. 1): S_ij = |W_ij| * ||X_j||_2, X_j the j-th input feature over all calibration
    tokens; compared within each output row (the paper's per-output comparison group)."""
    return weight.abs() * input_norms.to(weight.dtype).unsqueeze(0)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern: Pattern = None, *,
    mask: torch.Tensor | None = None, block: int = SPARSEGPT_BLOCK, dampening: float = SPARSEGPT_DAMPENING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023, Alg. 1): prune `weight` column by column and update the columns not yet
    processed to compensate, with the inverse Hessian H^-1 of the layer-wise problem ||WX - W'X||^2, H = X X^T.

    The mask is chosen per block of `block` columns from w^2 / [H^-1]_jj^2 (the OBS saliency; N:M groups
    from the current, already-updated weights), unless a fixed `mask` (True = kept) is given. Returns the
    updated weight (pruned entries exactly zero) and the mask.
    """
    rows, cols = weight.shape
    if pattern is not None and (block % pattern[1] or cols % pattern[1]):
        raise SubnetsError(f"SparseGPT's {format_pattern(pattern)} groups must divide its block of {block} columns "
                           f"and the {cols} input features.")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype).clone()
    h = hessian.detach().to(dtype).clone()
    dead = torch.diag(h) == 0  # inputs that are always zero: any value is optimal; keep H invertible
    h[dead, dead] = 1.0
    h += dampening * torch.diag(h).mean() * torch.eye(cols, dtype=dtype, device=h.device)
    # Upper Cholesky factor of H^-1: row j holds the inverse Hessian of columns j.. once columns < j are fixed.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    kept = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device, torch.bool).clone()
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        errors = torch.zeros_like(w1)
        diag = torch.diag(hinv1)
        if mask is None and pattern is None:
            kept[:, start:end] = lowest_pruned((w1 / diag) ** 2, sparsity)
        for i in range(end - start):
            if mask is None and pattern is not None and i % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                kept[:, start + i:start + i + pattern[1]] = nm_mask((w1[:, group] / diag[group]) ** 2, *pattern)
            column = w1[:, i]
            error = column * ~kept[:, start + i] / hinv1[i, i]
            w1[:, i:] -= error.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, start:end] = w1 * kept[:, start:end]
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w.to(weight.dtype), kept


def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float = OWL_THRESHOLD) -> float:
    """OWL's layer-wise outlier distribution (LOD): the fraction of a layer's Wanda scores above `threshold` times
    the layer's mean score (over all its matrices together)."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return float((flat > threshold * flat.mean()).float().mean())


def owl_sparsities(ratios: Sequence[float], target: float, lam: float = OWL_LAMBDA) -> list[float]:
    """OWL layer sparsities: outlier ratios rescaled to [0, 2 lambda], centred on the target density, so that layers
    with more outliers keep more weights; the sparsities average to `target` (equal ratios: uniform)."""
    values = torch.tensor(ratios, dtype=torch.float64)
    spread = values.max() - values.min()
    density = (values - values.min()) / spread * 2 * lam if spread > 0 else torch.zeros_like(values)
    density = density - density.mean() + (1 - target)
    sparsities = (1 - density).tolist()
    if min(sparsities) < 0 or max(sparsities) >= 1:
        raise SubnetsError(f"OWL with lambda {lam} gives layer sparsities outside [0, 1) at target {target}; "
                           f"expected a smaller --owl_lambda.")
    return sparsities


class PrunedMatrix(NamedTuple):
    """One matrix's result: the kept weights, the updated weight (None: the values stay) and its state (None: the
    method has none to draw other sparsities from)."""

    kept: torch.Tensor
    weight: torch.Tensor | None = None
    state: torch.Tensor | None = None


@dataclass(frozen=True)
class MatrixPruner:
    """How a one-shot method prunes one matrix: the calibration statistics it reads (`none`, `norms` or `hessian`),
    `prune(weight, statistics, sparsity, pattern) -> PrunedMatrix`, and `score(weight, statistics)`: the per-weight
    importance that structured pruning sums per head and FFN neuron (None: no structured form)."""

    statistics: str
    prune: Callable[[torch.Tensor, InputStatistics | None, float, Pattern], PrunedMatrix]
    score: Callable[[torch.Tensor, InputStatistics | None], torch.Tensor] | None = None


def _layer_groups(targets: Sequence[Target]) -> list[tuple[int | None, list[Target]]]:
    """Targets by encoder layer in order, then those outside the layers (pooler, classifier) last."""
    groups: dict[int | None, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.layer, []).append(target)
    return sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or 0))


@torch.no_grad()
def prune_one_shot(model: torch.nn.Module, targets: Sequence[Target], pruner: MatrixPruner,
                   sparsities: Mapping[str, float], pattern: Pattern, batches: Sequence[Batch], *,
                   granularity: str = "weight") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Prune `model` in place, layer by layer: each encoder layer's statistics come from calibration passes through
    the layers already pruned (and updated), as SparseGPT and Wanda do (targets outside the layers come last).

    At `head`, `neuron` or `structured` granularity each encoder layer prunes its lowest-scoring heads and/or FFN
    neurons (the fraction its sparsity gives; `pruner.score` summed over each unit's weights) and the targets
    outside the layers stay dense, so the ticket exports compactly. Returns the ticket and the state (None if
    the method has none)."""
    require_plain(model)
    modules = dict(model.named_modules())
    blocks = find_encoder_layers(model)
    structured = {i: layer for i, layer in enumerate(encoder_layers(model))} if granularity != "weight" else {}
    ticket: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for layer, group in _layer_groups(targets):
        stats = None
        if pruner.statistics != "none":
            stats = input_statistics(model, batches, {t.name: modules[t.module_name] for t in group},
                                     hessian=pruner.statistics == "hessian",
                                     stop_after=blocks[layer] if layer is not None else None)
        if layer in structured:
            results = _prune_units(structured[layer], modules, pruner, stats, sparsities, granularity)
        elif granularity != "weight":
            results = {}  # outside the blocks a structured ticket stays dense
        else:
            results = {t.name: pruner.prune(modules[t.module_name].weight.detach(),
                                            stats[t.name] if stats else None, sparsities[t.name], pattern)
                       for t in group}
        for target in group:
            weight = modules[target.module_name].weight
            result = results.get(target.name) or PrunedMatrix(torch.ones(target.shape, dtype=torch.bool))
            if result.weight is not None:
                weight.copy_(result.weight)
            weight.mul_(result.kept.to(weight.device, weight.dtype))
            ticket[target.name] = result.kept.cpu()
            if result.state is not None:
                state[target.name] = result.state.float().cpu()
    return ticket, (state or None)


def _prune_units(layer: EncoderLayer, modules: Mapping[str, torch.nn.Module], pruner: MatrixPruner,
                 stats: Mapping[str, InputStatistics] | None, sparsities: Mapping[str, float],
                 granularity: str) -> dict[str, PrunedMatrix]:
    """One encoder layer at a structured granularity: its head units and/or FFN neurons with the lowest summed
    score are pruned (a unit's score: `pruner.score` summed over every matrix slice it spans, fused projections
    and gated MLPs included); the state is each unit's score, expanded over its weights."""
    if pruner.score is None:
        raise SubnetsError("This one-shot method has no structured form; expected --granularity weight.")
    targets = {s.target.name: s.target for s in (*layer.heads, *layer.neurons)}
    scores = {name: pruner.score(modules[t.module_name].weight.detach(), stats[name] if stats else None)
              for name, t in targets.items()}
    kept = {name: torch.ones(t.shape, dtype=torch.bool) for name, t in targets.items()}
    state = {name: torch.zeros(t.shape) for name, t in targets.items()}
    for slices, applies in ((layer.heads, granularity in ("head", "structured")),
                            (layer.neurons, granularity in ("neuron", "structured"))):
        if not slices:
            continue
        units = unit_scores(slices, scores).cpu()
        units_kept = lowest_pruned(units, sparsities[slices[0].target.name] if applies else 0.0)
        for s in slices:  # write each unit's verdict and score over its rows (axis 0) or columns (axis 1)
            lines = torch.arange(s.start, s.start + s.units * s.width)
            dropped = lines[~units_kept.repeat_interleave(s.width)]
            (kept[s.target.name] if s.axis == 0 else kept[s.target.name].T)[dropped] = False
            (state[s.target.name] if s.axis == 0 else state[s.target.name].T)[lines] = \
                units.repeat_interleave(s.width)[:, None]
    return {name: PrunedMatrix(kept[name], state=state[name]) for name in targets}


def owl_layer_sparsities(model: torch.nn.Module, targets: Sequence[Target], batches: Sequence[Batch], target: float,
                         *, threshold: float = OWL_THRESHOLD, lam: float = OWL_LAMBDA) -> dict[str, float]:
    """Per target, its encoder layer's OWL sparsity, from the Wanda scores of the dense model on the calibration
    batches (targets outside the layers keep `target`)."""
    modules = dict(model.named_modules())
    layered = [t for t in targets if t.layer is not None]
    stats = input_statistics(model, batches, {t.name: modules[t.module_name] for t in layered})
    groups = [(layer, group) for layer, group in _layer_groups(layered)]
    ratios = [outlier_ratio([wanda_scores(modules[t.module_name].weight.detach(), stats[t.name].norms)
                             for t in group], threshold) for _, group in groups]
    per_layer = dict(zip([layer for layer, _ in groups], owl_sparsities(ratios, target, lam)))
    return {t.name: per_layer[t.layer] if t.layer is not None else target for t in targets}
