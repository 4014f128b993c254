"""Command-line options of selective fine-tuning and the builder that turns them into training components.

`--selective` chooses from `methods.SELECTIVE_METHODS` (name -> option groups + builder); adding a method is a new
file in `methods/` with its option group and builder plus one registry line (docs/selective.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from subnets.errors import SubnetsError
from subnets.registry import OptionGroups, check_choice, choices, option_groups
from subnets.store_options import MaskStoreArguments
from subnets.training import TrainingParts

from .methods import SELECTIVE_METHODS
from .recording import UpdateMaskRecorder
from .setup import SelectiveContext

SelectiveName = choices(SELECTIVE_METHODS)


@dataclass
class SelectiveArguments:
    """The choice of selective method and how often its update masks are logged; the methods' own options are in
    their groups (`selective_arguments`), the store in `--mask_store`."""
    _argument_group_name = "selective optimizer"  # its --help section

    selective: SelectiveName = field(default="none", metadata={
        "help": "Selective fine-tuning: none | rose_first | rose_second | rose_ensemble (ROSE, per-step masks over "
                "encoder weight tensors) | roast (RoAST's Fisher-ranked, sampled gradient masks; pair it with "
                "--adversary roast)."})
    update_mask_every: int = field(default=50, metadata={
        "help": "Log the update masks to the mask store (--mask_store) every N steps (RoAST: once per epoch, when "
                "they change)."})

    def __post_init__(self) -> None:
        check_choice("selective", self.selective, SELECTIVE_METHODS)
        if self.update_mask_every < 1:
            raise SubnetsError(f"--update_mask_every must be at least 1; got {self.update_mask_every}.")


def selective_arguments() -> list[type]:
    """The argument dataclasses of selective fine-tuning: the choice and every registered method's group."""
    return [SelectiveArguments, *option_groups(SELECTIVE_METHODS)]


def build_selective(args: SelectiveArguments, *, seed: int = 0, objective_args: Any = None,
                    options: Iterable[Any] | OptionGroups = (),
                    mask_store: MaskStoreArguments | None = None) -> TrainingParts:
    """The optimizer factory, callbacks and (for ROSE-First/Ensemble) objective of `args.selective`, with the
    method's option groups from `options` (defaults for those not given); update masks go to `mask_store`.

    The callback binds the method to the trainer's model in `on_train_begin`, before the optimizer is built.
    `objective_args` (the stage's ObjectiveArguments) lets a method that replaces the objective refuse an
    adversarial or debiasing one.
    """
    groups = options if isinstance(options, OptionGroups) else OptionGroups(options)
    store = mask_store or MaskStoreArguments()
    recorder = UpdateMaskRecorder(args.selective, store.root, args.update_mask_every)
    context = SelectiveContext(args.selective, groups, seed, recorder, objective_args)
    return SELECTIVE_METHODS[args.selective].build(context)
