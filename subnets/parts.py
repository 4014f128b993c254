"""What a training run is made of, built from its options: the task's data (`load_task_data`) and the method
options' objective, callbacks and optimizer (`build_training_parts`). The stage scripts and `subnets.api` both
build their runs here, so the same options train the same model either way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedTokenizerBase

from .config import DataArguments, TrainingArguments
from .data import load_split, subsample, tokenize, validation_split
from .errors import SubnetsError
from .objectives import ObjectiveArguments, build_objective, objective_arguments
from .registry import OptionGroups
from .selective import SelectiveArguments, build_selective, selective_arguments
from .store_options import MaskStoreArguments
from .tasks import TaskSpec
from .training import TrainingParts


def method_arguments() -> list[type]:
    """The option groups `build_training_parts` reads besides `TrainingArguments`: the objective's and the selective
    optimizer's choices, every registered method's group, and the mask store (where update masks go)."""
    return [MaskStoreArguments, *objective_arguments(), *selective_arguments()]


class TaskData(NamedTuple):
    """A task's splits: `train` and `eval` tokenised (for training; `train` None for a task without training
    rows), `eval_text` the raw evaluation rows."""

    train: datasets.Dataset | None
    eval: datasets.Dataset
    eval_text: datasets.Dataset


def load_task_data(options: DataArguments, task: TaskSpec, tokenizer: PreTrainedTokenizerBase) -> TaskData:
    """The task's tokenised training split (a fixed seeded sample with max_train_samples) and evaluation split
    (the first max_eval_samples rows): the task's evaluation split, or with validation_split_percentage the
    training rows held out for model selection (`subnets.data.validation_split`)."""
    if options.validation_split_percentage:
        if not task.trainable:
            raise SubnetsError(f"--validation_split_percentage holds out training rows; task {task.name} has no "
                               f"training split.")
        rows, held, _ = validation_split(load_split(task, "train", options.data_dir), task,
                                         options.validation_split_percentage)
    else:
        rows = load_split(task, "train", options.data_dir) if task.trainable else None
        held = load_split(task, task.eval_split, options.data_dir)

    def prepare(raw: datasets.Dataset) -> datasets.Dataset:
        return tokenize(raw, tokenizer, task, options.max_seq_length, pad_to_max_length=options.pad_to_max_length)

    train = None if rows is None else prepare(subsample(rows, options.max_train_samples, shuffle=True))
    eval_text = subsample(held, options.max_eval_samples, shuffle=False)
    return TaskData(train, prepare(eval_text), eval_text)


def build_training_parts(options: OptionGroups, task: TaskSpec, train: Any) -> TrainingParts:
    """The objective, callbacks and optimizer the method options choose (cross-entropy and AdamW by default).

    `options`: the run's option groups (`TrainingArguments` and those of `method_arguments`; defaults for those not
    given); `train`: the training split, which a debiasing loss checks its cached predictions against."""
    training = options[TrainingArguments]
    parts = build_selective(options[SelectiveArguments], seed=training.seed, objective_args=options[ObjectiveArguments],
                            options=options, mask_store=options[MaskStoreArguments])
    smoothing = training.label_smoothing_factor
    if parts.objective is not None and smoothing:
        raise SubnetsError("--label_smoothing_factor applies to the cross-entropy objectives; expected 0 with a ROSE "
                           "or RoAST selective method, which bring their own loss.")
    if parts.objective is None:
        parts.objective = build_objective(options[ObjectiveArguments], task, train, label_smoothing=smoothing,
                                          options=options)
    return parts
