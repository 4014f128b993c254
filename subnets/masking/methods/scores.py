"""Straight-through score masks (SRNets, Liu et al. 2022; movement pruning, Sanh et al. 2020) under a fixed or
cubic sparsity schedule. docs/methods.md, "Straight-through score masks".

Per group a real score; the forward pass uses 1[score > threshold], the backward pass is straight-through
(d mask / d score = 1). Init "hard": per matrix, score 0 for the s-fraction of smallest |W| and 2 x threshold
(threshold 0.01) for the rest; init "soft": score = |W| (mean |W| per group). Sparsity is controlled by
re-setting thresholds to the k-th smallest score, per matrix or globally, every `--threshold_interval` steps
(`ScoreSchedule`); the sparsity itself may follow the cubic schedule
s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t1 - t0))^3 (Zhu & Gupta, 2017).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch

from ...errors import SubnetsError
from ...registry import check_choice
from ...targets import Target
from ...training import Trainer
from ..base import MaskParametrization, attach
from ..callbacks import MaskSearchCallback
from ..draw import SCOPES, pruned_count
from ..layout import Layout
from ..search_context import FoundMask, SearchContext

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


class ScoreSchedule(MaskSearchCallback):
    """Re-sets score thresholds every `interval` steps to the scheduled sparsity (fixed, or cubic from
    `initial` to `final` between the fractions `start` and `end` of training), per matrix or globally."""

    def __init__(self, masks: dict[str, ScoreMask], *, final: float, initial: float | None = None, lr: float = 0.1,
                 interval: int = 10, scope: str = "per_matrix", start: float = 0.0, end: float = 0.0):
        super().__init__(masks, lr=lr)
        self.final, self.initial = final, final if initial is None else initial
        self.interval, self.scope, self.start, self.end = interval, scope, start, end

    def sparsity_at(self, trainer: Trainer) -> float:
        return cubic_sparsity(trainer.global_step, initial=self.initial, final=self.final,
                              start=int(self.start * trainer.max_steps), end=int(self.end * trainer.max_steps))

    def on_train_begin(self, trainer: Trainer) -> None:
        reset_thresholds(self.masks, self.sparsity_at(trainer), scope=self.scope)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.global_step % self.interval == 0:
            reset_thresholds(self.masks, self.sparsity_at(trainer), scope=self.scope)

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        return {**super().log_scalars(trainer), "train/scheduled_sparsity": self.sparsity_at(trainer)}


SCHEDULES = ("fixed", "cubic")


@dataclass
class ScoreArguments:
    config_group = "SearchArguments"
    _argument_group_name = "method: scores"  # its --help section

    score_init: Literal[SCORE_INITS] = field(default="hard", metadata={"help": "Score masks: hard | soft"})
    sparsity_schedule: Literal[SCHEDULES] = field(default="fixed", metadata={"help": "Score masks: fixed | cubic"})
    initial_sparsity: float = field(default=0.0, metadata={"help": "Cubic schedule: starting sparsity."})
    schedule_window: tuple[float, float] = field(default=(0.0, 0.8), metadata={
        "help": "Cubic schedule: (t0, t1) fractions."})
    threshold_interval: int = field(default=10, metadata={"help": "Score masks: steps between threshold resets."})

    def __post_init__(self) -> None:
        check_choice("score_init", self.score_init, SCORE_INITS)
        check_choice("sparsity_schedule", self.sparsity_schedule, SCHEDULES)


def build_scores(context: SearchContext) -> FoundMask:
    options, search = context.options[ScoreArguments], context.search
    cubic = options.sparsity_schedule == "cubic"
    initial = options.initial_sparsity if cubic else search.target_sparsity
    masks = attach_scores(context.model, context.targets, init=options.score_init, sparsity=initial,
                          granularity=search.granularity)
    start, end = options.schedule_window if cubic else (0.0, 0.0)
    return context.train_mask(ScoreSchedule(masks, final=search.target_sparsity, initial=initial, lr=search.mask_lr,
                                            interval=options.threshold_interval, scope=search.scope, start=start,
                                            end=end))
