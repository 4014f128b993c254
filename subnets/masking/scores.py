"""Straight-through score masks (SRNets, Liu et al. 2022; movement pruning, Sanh et al. 2020).

Per group a real score; the forward pass uses 1[score > threshold], the backward pass is straight-through
(d mask / d score = 1). Init "hard": per matrix, score 0 for the s-fraction of smallest |W| and 2 x threshold
(threshold 0.01) for the rest; init "soft": score = |W| (mean |W| per group). Sparsity is controlled by
re-setting thresholds to the k-th smallest score, per matrix or globally, at a fixed interval; the sparsity
itself may follow the cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3 (Zhu & Gupta, 2017).
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..errors import SubnetsError
from ..targets import Target
from .base import MaskParametrization, attach
from .draw import SCOPES, pruned_count
from .layout import Layout

HARD_INIT_THRESHOLD = 0.01
SCORE_INITS = ("hard", "soft")


class ScoreMask(MaskParametrization):
    """Scores in group shape and a threshold; forward multiplies by the straight-through binary mask."""

    def __init__(self, layout: Layout, scores: torch.Tensor, threshold: float):
        super().__init__(layout)
        self.scores = torch.nn.Parameter(scores)
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def gate(self) -> torch.Tensor:
        hard = (self.scores > self.threshold).to(self.scores.dtype)
        return hard + self.scores - self.scores.detach()  # value: hard mask; gradient: identity (straight-through)

    def binary(self) -> torch.Tensor:
        return self.scores.detach() > self.threshold

    def state(self) -> torch.Tensor:
        return self.scores


def group_magnitude(weight: torch.Tensor, layout: Layout) -> torch.Tensor:
    """|W| per weight, or mean |W| per head / neuron."""
    magnitude = weight.detach().float().abs()
    if layout.axis is None:
        return magnitude
    per_line = magnitude.mean(dim=1 - layout.axis)
    return layout.group_means(per_line)


def initial_scores(weight: torch.Tensor, layout: Layout, init: str, sparsity: float) -> torch.Tensor:
    magnitude = group_magnitude(weight, layout)
    if init == "soft":
        return magnitude
    if init != "hard":
        raise SubnetsError(f"Unknown score init '{init}'; expected one of {', '.join(SCORE_INITS)}.")
    scores = torch.full_like(magnitude, 2 * HARD_INIT_THRESHOLD)
    order = torch.argsort(magnitude.flatten(), stable=True)[: pruned_count(magnitude.numel(), sparsity)]
    scores.view(-1)[order] = 0.0
    return scores


def attach_scores(
    model: torch.nn.Module, targets: Iterable[Target], *, init: str = "hard", sparsity: float = 0.0,
    granularity: str = "weight",
) -> dict[str, ScoreMask]:
    """Put a score mask on every target (freezing all model weights); hard init prunes `sparsity` per matrix."""
    def make(target: Target, layout: Layout, weight: torch.Tensor) -> ScoreMask:
        return ScoreMask(layout, initial_scores(weight, layout, init, sparsity), HARD_INIT_THRESHOLD)

    masks = attach(model, targets, granularity, make)
    if init == "soft":
        reset_thresholds(masks, sparsity, scope="per_matrix")
    return masks


@torch.no_grad()
def reset_thresholds(masks: dict[str, ScoreMask], sparsity: float, *, scope: str = "per_matrix") -> None:
    """Set thresholds to the k-th smallest score (k = sparsity x count), per matrix or over all scores.

    Per matrix, the matrices of one shape are stacked and sorted together: one sort per shape group (on CUDA
    `torch.kthvalue` runs one thread block per slice, about 20x slower than a sort, PyTorch issue 75599)."""
    if scope not in SCOPES:
        raise SubnetsError(f"Unknown threshold scope '{scope}'; expected one of {', '.join(SCOPES)}.")
    if scope == "global":
        threshold = _kth_smallest(torch.cat([m.scores.flatten() for m in masks.values()])[None], sparsity)[0]
        for m in masks.values():
            m.threshold.copy_(threshold)
        return
    groups: dict[torch.Size, list[ScoreMask]] = {}
    for m in masks.values():
        groups.setdefault(m.scores.shape, []).append(m)
    for group in groups.values():
        thresholds = _kth_smallest(torch.stack([m.scores.flatten() for m in group]), sparsity)
        for m, threshold in zip(group, thresholds):
            m.threshold.copy_(threshold)


def _kth_smallest(rows: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per row, the k-th smallest value (k = sparsity x row length); below every value when k is 0."""
    k = pruned_count(rows.shape[1], sparsity)
    if k == 0:
        return rows.min(dim=1).values - 1.0  # strictly below every score: nothing pruned
    return rows.float().sort(dim=1).values[:, k - 1]


def cubic_sparsity(step: int, *, initial: float, final: float, start: int, end: int) -> float:
    """Gradual sparsity (cubic schedule): `initial` before `start`, `final` after `end`."""
    if step <= start or end <= start:
        return initial if step <= start else final
    progress = min(1.0, (step - start) / (end - start))
    return final + (initial - final) * (1.0 - progress) ** 3
