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
    """Set thresholds to the k-th smallest score (k = sparsity x count), per matrix or over all scores."""
    if scope not in SCOPES:
        raise SubnetsError(f"Unknown threshold scope '{scope}'; expected one of {', '.join(SCOPES)}.")
    if scope == "per_matrix":
        for m in masks.values():
            m.threshold.copy_(_kth_smallest(m.scores.flatten(), sparsity))
        return
    flat = torch.cat([m.scores.flatten() for m in masks.values()])
    threshold = _kth_smallest(flat, sparsity)
    for m in masks.values():
        m.threshold.copy_(threshold)


def _kth_smallest(values: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = pruned_count(values.numel(), sparsity)
    if k == 0:
        return values.min() - 1.0  # strictly below every score: nothing pruned
    return torch.kthvalue(values.float(), k).values


def cubic_sparsity(step: int, *, initial: float, final: float, start: int, end: int) -> float:
    """Gradual sparsity (cubic schedule): `initial` before `start`, `final` after `end`."""
    if step <= start or end <= start:
        return initial if step <= start else final
    progress = min(1.0, (step - start) / (end - start))
    return final + (initial - final) * (1.0 - progress) ** 3
