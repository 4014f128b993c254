"""A Python API for notebooks: each step of the pipeline in a line or two (see docs/api.md).

Thin wrappers over the library the stage scripts use: `Trainer` (one training loop), `masking.search`,
`masking.draw`, `masking.retrain`, `attacks.pipeline` and `masks.MaskStore`. Training options are the stage
options (`TrainingArguments` field names and the stage's option names) given as keyword arguments.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple, Sequence

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import TrainingArguments
from .data import default_data_dir, load_split, subsample, tokenize
from .distributed import init_distributed
from .errors import SubnetsError
from .tasks import TaskSpec, get_task
from .training import Trainer, set_seed
from .user_data import DataFileArguments, user_task

PathLike = str | os.PathLike


class TaskData(NamedTuple):
    """A task's splits: `train` and `eval` tokenised (for training), `eval_text` the raw evaluation split."""

    train: datasets.Dataset | None
    eval: datasets.Dataset
    eval_text: datasets.Dataset


def _options(cls: type, options: dict[str, Any], **fixed: Any) -> Any:
    """An argument dataclass from keyword options, with one clear error for an unknown name."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise SubnetsError(f"Unknown option(s) {', '.join(unknown)}; expected fields of {cls.__name__}.")
    return cls(**options, **fixed)


def load_task(name: str | None = None, **files: Any) -> TaskSpec:
    """A built-in task by name (`load_task("sst2")`), or one read from your own files:
    `load_task(train_file="train.csv", validation_file="dev.csv", text_columns="sentence")` (options as the
    stages' --train_file, --validation_file, --test_file, --text_columns, --label_column, --label_names)."""
    if files:
        return user_task(_options(DataFileArguments, files), name)
    return get_task(name or "sst2")


def load_model(name_or_path: PathLike, task: TaskSpec, *, seed: int = 42) -> tuple[PreTrainedModel,
                                                                                 PreTrainedTokenizerBase]:
    """A sequence classifier with the task's labels ("minilm", a hub name, a directory or a stage run directory);
    a new classifier head is initialised from `seed`, as the stages do with --seed."""
    from .models import load_classifier

    set_seed(seed)
    return load_classifier(str(name_or_path), task.label_names)


def load_data(task: TaskSpec, tokenizer: PreTrainedTokenizerBase, *, data_dir: PathLike | None = None,
              max_seq_length: int = 128, max_train_samples: int | None = None,
              max_eval_samples: int | None = None) -> TaskData:
    """The task's train split (if it has one) and evaluation split, tokenised as the stages do."""
    raw_eval = subsample(load_split(task, task.eval_split, data_dir), max_eval_samples, shuffle=False)
    train = None
    if task.trainable:
        raw_train = subsample(load_split(task, "train", data_dir), max_train_samples, shuffle=True)
        train = tokenize(raw_train, tokenizer, task, max_seq_length)
    return TaskData(train, tokenize(raw_eval, tokenizer, task, max_seq_length), raw_eval)


def finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData,
             output_dir: PathLike, **training: Any) -> dict[str, Any]:
    """Stage 1: fine-tune `model` in place; returns the HF-style metrics."""
    args = _options(TrainingArguments, training, output_dir=str(output_dir))
    distributed = init_distributed(args.use_cpu, args.ddp_backend)
    return Trainer(model, args, task, data.train, data.eval, tokenizer, distributed=distributed).train()


def search_mask(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData,
                output_dir: PathLike, *, source: str = "api", **options: Any) -> dict[str, Any]:
    """Stage 2: search a mask (options: the stage's option names, such as method, target_sparsity, controller,
    imp_rate, mask_store, plus TrainingArguments fields); returns metrics with `mask_ids` {"ticket": id,
    "state": id}.

    Leaves `model` gated after hard_concrete and scores (gates on the targets, weights frozen; its `save_pretrained`
    writes the finalized model, `subnets.finalize(model)` makes it plain), plain with the pruned weights zeroed after
    imp, random and magnitude."""
    from .loop import guard_save_pretrained
    from .masking.search import SearchArguments, search_arguments, search_mask as run_search
    from .registry import OptionGroups
    from .store_options import MaskStoreArguments

    groups = []
    for cls in [*search_arguments(), MaskStoreArguments]:
        names = {f.name for f in dataclasses.fields(cls)}
        groups.append(cls(**{k: options.pop(k) for k in list(options) if k in names}))
    args = _options(TrainingArguments, options, output_dir=str(output_dir))
    chosen = OptionGroups(groups)
    metrics = run_search(model, tokenizer, task, data.train, data.eval, args, chosen[SearchArguments], source=source,
                         options=chosen, mask_store=chosen[MaskStoreArguments])
    guard_save_pretrained(model)
    return metrics


def draw_ticket(mask: PathLike | dict[str, torch.Tensor], sparsity: float | None = None, *,
                mask_store: PathLike | None = None, scope: str = "global") -> dict[str, torch.Tensor]:
    """A binary ticket at exactly `sparsity` from a mask (store id, stage-2 run directory, safetensors file or a
    dict of tensors); with no sparsity, a stored binary ticket as it is."""
    from .masking.draw import draw_mask
    from .masking.retrain import RetrainArguments, draw_ticket as draw_from_source
    from .store_options import MaskStoreArguments

    if isinstance(mask, dict):
        if sparsity is None:
            raise SubnetsError("draw_ticket needs a sparsity to draw from a mask given as tensors.")
        return draw_mask({n: t.float() for n, t in mask.items()}, sparsity, scope=scope)
    retrain = RetrainArguments(mask=str(mask), sparsity=sparsity, draw_scope=scope)
    return draw_from_source(retrain, MaskStoreArguments(None if mask_store is None else str(mask_store)))[0]


def retrain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ticket: dict[str, torch.Tensor],
            task: TaskSpec, data: TaskData, output_dir: PathLike, **training: Any) -> dict[str, Any]:
    """Stage 3: apply `ticket` to `model` and retrain with the mask fixed; metrics plus the ticket's sparsity.
    Refuses a gated model. Leaves `model` plain, retrained in place, its pruned weights exact zeros."""
    from .masking.retrain import retrain_ticket, ticket_trainer
    from .weights import is_parametrized

    if is_parametrized(model):
        raise SubnetsError("retrain was given a gated model (it still carries mask parametrizations, its weights "
                           "frozen); expected a plain model: subnets.finalize(model) first, or load one.")
    args = _options(TrainingArguments, training, output_dir=str(output_dir))
    return retrain_ticket(ticket_trainer(model, tokenizer, ticket, task, data.train, data.eval, args), ticket)


def attack(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, data: TaskData, *,
           attack: str = "textfooler", output_prefix: PathLike = "attack", max_length: int = 128,
           **options: Any) -> dict[str, Any]:
    """Attack the evaluation split, resumably, writing TextAttack's outputs at `output_prefix` (.jsonl, _results.csv,
    _results_summary.json). Options as `subnets.attacks.pipeline.AttackOptions` (samples, seed, data_dir,
    query_budget, max_ratio, embeddings, disable, ...; `data_dir`, for the shipped neighbour lists, defaults to
    $SUBNETS_DATA_DIR); returns clean accuracy, accuracy under attack, ... and
    the `attack_config`."""
    from .attacks.pipeline import AttackOptions, attack_examples, task_examples

    chosen = AttackOptions(attack=attack, **{"data_dir": default_data_dir(), **options})
    return attack_examples(model, tokenizer, task_examples(task, data.eval_text, chosen), chosen, output_prefix,
                           max_length=max_length)


def put_mask(mask: dict[str, torch.Tensor], model: PreTrainedModel, *, task: TaskSpec | str, method: str = "user",
             model_name: str = "api", mask_store: PathLike | None = None, seed: int = 0, **meta: Any) -> str:
    """Put a mask into the mask store (binary: a ticket, real-valued: a state) with the model's fingerprint;
    returns the record id."""
    from masks import MaskStore
    from masks.store import store_root

    from .masking.sources import record_meta

    binary = all(t.dtype == torch.bool for t in mask.values())
    task_name = task if isinstance(task, str) else task.name
    record = record_meta(model, task_name, method, model_name=model_name, parent=model_name, seed=seed, **meta)
    tensors = {n: (t.bool() if binary else t.float()).cpu() for n, t in mask.items()}
    return MaskStore(store_root(mask_store)).put(tensors, dict(record, kind="ticket" if binary else "state"))


__all__: Sequence[str] = ("TaskData", "load_task", "load_model", "load_data", "finetune", "search_mask",
                          "draw_ticket", "retrain", "attack", "put_mask")
