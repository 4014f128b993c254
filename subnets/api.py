"""A Python API for notebooks: each step of the pipeline in a line or two (see docs/api.md).

Thin wrappers over the library the stage scripts use: `parts` (the data and the method options' objective,
callbacks and optimizer), `Trainer` (one training loop), `masking.search`, `masking.draw`, `masking.retrain`,
`attacks.pipeline` and `subnets.masks.MaskStore`. Training options are the stage options (`TrainingArguments` field
names and the option names of the stage's method groups) given as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import DataArguments, TrainingArguments
from .data import default_data_dir
from .distributed import init_distributed
from .errors import SubnetsError
from .parts import TaskData, build_training_parts, load_task_data, method_arguments
from .registry import OptionGroups
from .runs import claim_api_run_dir as _claim_run_dir
from .tasks import TaskSpec, get_task
from .training import Trainer, set_seed
from .user_data import DataFileArguments, user_task

PathLike = str | os.PathLike


def _groups(classes: Sequence[type], options: dict[str, Any]) -> OptionGroups:
    """Keyword options routed to the option groups `classes` by field name (every group built, with its defaults
    for the options not given), with one clear error for an unknown name."""
    owner = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(owner))
    if unknown:
        raise SubnetsError(f"Unknown option(s) {', '.join(unknown)}; expected fields of "
                           f"{', '.join(cls.__name__ for cls in classes)}.")
    return OptionGroups(cls(**{k: v for k, v in options.items() if owner[k] is cls}) for cls in classes)


def _training_groups(output_dir: PathLike, options: dict[str, Any], *extra: type) -> tuple[OptionGroups,
                                                                                           dict[str, Any]]:
    """The option groups of a training call (`TrainingArguments`, the `extra` groups and the method groups, as in
    the stages), and what its run_config.json records of the method options given (nothing when none is given)."""
    classes = list(dict.fromkeys([TrainingArguments, *extra, *method_arguments()]))
    groups = _groups(classes, {**options, "output_dir": str(output_dir)})
    ours = {f.name for cls in (TrainingArguments, *extra) for f in dataclasses.fields(cls)}
    methods = {k: v for k, v in options.items() if k not in ours}
    return groups, {"methods": methods} if methods else {}


def _check_arguments(function: str, **given: Any) -> None:
    """One clear error for an argument of the wrong kind (a task name where a TaskSpec is expected, ...)."""
    kinds = {"model": (PreTrainedModel, "a model from load_model"),
             "tokenizer": (PreTrainedTokenizerBase, "a tokenizer from load_model"),
             "task": (TaskSpec, "a task from load_task"), "data": (TaskData, "the splits load_data returns"),
             "mask": (dict, "a dict of tensors by parameter name")}
    for name, value in given.items():
        kind, expected = kinds[name]
        if not isinstance(value, kind):
            raise SubnetsError(f"{function}: argument {name} is {type(value).__name__}; expected {expected}.")
    if isinstance(given.get("mask"), dict) and not all(isinstance(t, torch.Tensor) for t in given["mask"].values()):
        raise SubnetsError(f"{function}: argument mask holds values that are not tensors; expected "
                           f"{kinds['mask'][1]}.")


def load_task(name: str | None = None, **files: Any) -> TaskSpec:
    """A built-in task by name (`load_task("sst2")`), or one read from your own files:
    `load_task(train_file="train.csv", validation_file="dev.csv", text_columns="sentence")` (options as the
    stages' --train_file, --validation_file, --test_file, --text_columns, --label_column, --label_names)."""
    if name is not None and not isinstance(name, str):
        raise SubnetsError(f"load_task: name is {type(name).__name__}; expected a task name such as 'sst2'.")
    if files:
        return user_task(_groups([DataFileArguments], files)[DataFileArguments], name)
    return get_task(name or "sst2")


def load_model(name_or_path: PathLike, task: TaskSpec, *, seed: int = 42) -> tuple[PreTrainedModel,
                                                                                 PreTrainedTokenizerBase]:
    """A sequence classifier with the task's labels ("minilm", a hub name, a directory or a stage run directory);
    a new classifier head is initialised from `seed`, as the stages do with --seed."""
    from .models import load_classifier

    _check_arguments("load_model", task=task)
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SubnetsError(f"load_model: seed {seed!r} is out of range; expected an integer in [0, 2**32 - 1].")
    set_seed(seed)
    return load_classifier(str(name_or_path), task.label_names)


def load_data(task: TaskSpec, tokenizer: PreTrainedTokenizerBase, *, data_dir: PathLike | None = None,
              max_seq_length: int = 128, max_train_samples: int | None = None, max_eval_samples: int | None = None,
              validation_split_percentage: int = 0) -> TaskData:
    """The task's train split (if it has one) and evaluation split, tokenised as the stages do (`parts.load_task_data`;
    `validation_split_percentage` evaluates on held-out training rows, as --validation_split_percentage); `data_dir`
    defaults to $SUBNETS_DATA_DIR (else the hub), as in the stages."""
    _check_arguments("load_data", task=task, tokenizer=tokenizer)
    options = DataArguments(data_dir=default_data_dir() if data_dir is None else str(data_dir),
                            max_seq_length=max_seq_length, max_train_samples=max_train_samples,
                            max_eval_samples=max_eval_samples, validation_split_percentage=validation_split_percentage)
    return load_task_data(options, task, tokenizer)


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData,
             output_dir: PathLike, **training: Any) -> dict[str, Any]:
    """Stage 1: fine-tune `model` in place; returns the HF-style metrics. Options: `TrainingArguments` fields and
    the method options of `subnets-finetune` (adversary="freelb", debias="poe", selective="rose_second", their
    groups' options, mask_store). A folder holding this very call's run resumes it; one holding another run is
    refused (see `_claim_run_dir`)."""
    _check_arguments("finetune", model=model, tokenizer=tokenizer, task=task, data=data)
    groups, methods = _training_groups(output_dir, training)
    args = groups[TrainingArguments]
    parts = build_training_parts(groups, task, data.train)
    distributed = init_distributed(args.use_cpu, args.ddp_backend)
    trainer = Trainer(model, args, task, data.train, data.eval, tokenizer, distributed=distributed,
                      **parts.trainer_options())
    _claim_run_dir("finetune", args, model, task, data, **methods)  # once the trainer has checked its inputs
    return trainer.train()


def search_mask(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData,
                output_dir: PathLike, *, source: str = "api", **options: Any) -> dict[str, Any]:
    """Stage 2: search a mask (options: the stage's option names, such as method, target_sparsity, controller,
    imp_rate, mask_store, adversary, selective, plus TrainingArguments fields); returns metrics with `mask_ids`
    {"ticket": id, "state": id}.

    Leaves `model` gated after hard_concrete and scores (gates on the targets, weights frozen; its `save_pretrained`
    writes the finalized model, `subnets.finalize(model)` makes it plain), plain with the pruned weights zeroed after
    imp, random and magnitude."""
    from .loop import guard_save_pretrained
    from .masking.search import SearchArguments, search_arguments, search_mask as run_search
    from .store_options import MaskStoreArguments

    _check_arguments("search_mask", model=model, tokenizer=tokenizer, task=task, data=data)
    searched = [*search_arguments(), MaskStoreArguments]
    groups, methods = _training_groups(output_dir, options, *searched)
    args = groups[TrainingArguments]
    parts = build_training_parts(groups, task, data.train)
    _claim_run_dir("search_mask", args, model, task, data, source=source,
                   search={cls.__name__: dataclasses.asdict(groups[cls]) for cls in searched}, **methods)
    metrics = run_search(model, tokenizer, task, data.train, data.eval, args, groups[SearchArguments], source=source,
                         options=groups, mask_store=groups[MaskStoreArguments], **parts.trainer_options())
    guard_save_pretrained(model)
    return metrics


def draw_ticket(mask: PathLike | dict[str, torch.Tensor], sparsity: float | None = None, *,
                mask_store: PathLike | None = None, scope: str = "global",
                model: PreTrainedModel | None = None) -> dict[str, torch.Tensor]:
    """A binary ticket at exactly `sparsity` from a mask (store id, stage-2 run directory, safetensors file or a
    dict of tensors); with no sparsity, a stored binary ticket as it is. The state of a structured search is
    drawn as whole heads and neurons, which needs `model` (their layout)."""
    from .masking.draw import draw_mask
    from .masking.retrain import RetrainArguments, draw_ticket as draw_from_source
    from .store_options import MaskStoreArguments

    if isinstance(mask, dict):
        _check_arguments("draw_ticket", mask=mask)
        if sparsity is None:
            raise SubnetsError("draw_ticket needs a sparsity to draw from a mask given as tensors.")
        return draw_mask({n: t.float() for n, t in mask.items()}, sparsity, scope=scope)
    retrain = RetrainArguments(mask=str(mask), sparsity=sparsity, draw_scope=scope)
    return draw_from_source(retrain, MaskStoreArguments(None if mask_store is None else str(mask_store)), model)[0]


def retrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ticket: dict[str, torch.Tensor],
            task: TaskSpec, data: TaskData, output_dir: PathLike, **training: Any) -> dict[str, Any]:
    """Stage 3: apply `ticket` to `model` and retrain with the mask fixed (options as `finetune`'s); metrics plus
    the ticket's sparsity.
    Refuses a gated model. Leaves `model` plain, retrained in place, its pruned weights exact zeros."""
    from subnets.masks import model_fingerprint

    from .masking.retrain import retrain_ticket, ticket_trainer
    from .weights import is_parametrized

    _check_arguments("retrain", model=model, tokenizer=tokenizer, mask=ticket, task=task, data=data)
    if is_parametrized(model):
        raise SubnetsError("retrain was given a gated model (it still carries mask parametrizations, its weights "
                           "frozen); expected a plain model: subnets.finalize(model) first, or load one.")
    groups, methods = _training_groups(output_dir, training)
    args = groups[TrainingArguments]
    parts = build_training_parts(groups, task, data.train)
    trainer = ticket_trainer(model, tokenizer, ticket, task, data.train, data.eval, args, **parts.trainer_options())
    _claim_run_dir("retrain", args, model, task, data, ticket=model_fingerprint(ticket), **methods)  # inputs checked
    return retrain_ticket(trainer, ticket)


def attack(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData, *,
           attack: str = "textfooler", output_prefix: PathLike = "attack", max_length: int = 128,
           data_dir: PathLike | None = None, bf16: bool = True, use_cpu: bool = False,
           **options: Any) -> dict[str, Any]:
    """Attack the evaluation split, resumably, writing TextAttack's outputs at `output_prefix` (.jsonl, _results.csv,
    _results_summary.json). Options: the `subnets.attacks.AttackOptions` keywords (samples, seed, query_budget,
    max_ratio, max_candidates, embeddings, disable, batch_size (examples attacked together), wordnet_dir);
    `data_dir`, for the shipped neighbour lists, defaults to $SUBNETS_DATA_DIR. Returns clean accuracy, accuracy
    under attack, ... and the `attack_config`."""
    from .attacks import AttackOptions
    from .attacks.pipeline import attack_examples, task_examples

    _check_arguments("attack", model=model, tokenizer=tokenizer, task=task, data=data)
    chosen = AttackOptions.from_keywords(attack=attack, **options)
    return attack_examples(model, tokenizer, task_examples(task, data.eval_text, chosen), chosen, output_prefix,
                           max_length=max_length, data_dir=default_data_dir() if data_dir is None else data_dir,
                           bf16=bf16, use_cpu=use_cpu)


def put_mask(mask: dict[str, torch.Tensor], model: PreTrainedModel, *, task: TaskSpec | str, method: str = "user",
             model_name: str = "api", mask_store: PathLike | None = None, seed: int = 0, **meta: Any) -> str:
    """Put a mask into the mask store (binary: a ticket, real-valued: a state) with the model's fingerprint;
    returns the record id."""
    from subnets.masks import MaskStore
    from subnets.masks.store import store_root

    from .masking.sources import record_meta

    _check_arguments("put_mask", mask=mask, model=model)
    binary = all(t.dtype == torch.bool for t in mask.values())
    task_name = task if isinstance(task, str) else task.name
    record = record_meta(model, task_name, method, model_name=model_name, parent=model_name, seed=seed, **meta)
    tensors = {n: (t.bool() if binary else t.float()).cpu() for n, t in mask.items()}
    return MaskStore(store_root(mask_store)).put(tensors, dict(record, kind="ticket" if binary else "state"))


__all__: Sequence[str] = ("TaskData", "load_task", "load_model", "load_data", "finetune", "search_mask",
                          "draw_ticket", "retrain", "attack", "put_mask")
