"""Straight-through score masks (movement/SRNets style) with a fixed or cubic sparsity schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...registry import check_choice
from ..callbacks import ScoreSchedule
from ..scores import SCORE_INITS, attach_scores
from .context import FoundMask, SearchContext

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


def search_scores(context: SearchContext) -> FoundMask:
    options, search = context.options[ScoreArguments], context.search
    cubic = options.sparsity_schedule == "cubic"
    initial = options.initial_sparsity if cubic else search.target_sparsity
    masks = attach_scores(context.model, context.targets, init=options.score_init, sparsity=initial,
                          granularity=search.granularity)
    start, end = options.schedule_window if cubic else (0.0, 0.0)
    return context.train_mask(ScoreSchedule(masks, final=search.target_sparsity, initial=initial, lr=search.mask_lr,
                                            interval=options.threshold_interval, scope=search.scope, start=start,
                                            end=end))
