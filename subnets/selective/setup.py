"""What a selective method's builder receives (`SelectiveContext`) and returns (`subnets.training.TrainingParts`),
and the AdamW options its masked optimizer takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from subnets.config import TrainingArguments
from subnets.registry import OptionGroups
from subnets.training import TrainingParts

from .recording import UpdateMaskRecorder


SelectiveSetup = TrainingParts  # the name selective builders returned before TrainingParts (public import)


@dataclass
class SelectiveContext:
    """The chosen method's name, its parsed option groups (`options[RoseArguments]`, ...), the run's seed, the
    writer of its update masks and the stage's objective options (`ObjectiveArguments`, or None), for methods that
    replace the objective."""

    name: str
    options: OptionGroups
    seed: int
    recorder: UpdateMaskRecorder
    objective_args: Any = None


def adamw_options(args: TrainingArguments) -> dict[str, Any]:
    """The AdamW hyper-parameters of the training options (for the masked AdamW subclasses)."""
    return dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                weight_decay=args.weight_decay)
