"""What every stage script shares: argument parsing, the run directory, data, objective and optimizer set-up."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import datasets
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from subnets.config import DataArguments, ModelArguments, StageArgs, TrainingArguments, parse_args
from subnets.data import default_data_dir, load_split, subsample, tokenize
from subnets.errors import SubnetsError
from subnets.io import atomic_write_json
from subnets.objectives import ObjectiveArguments, build_objective
from subnets.selective import SelectiveArguments, build_selective
from subnets.tasks import TaskSpec
from subnets.threads import configure_threads
from subnets.training import Callback, Objective, OptimizerFactory

# Argument dataclasses every training stage takes; method packages append theirs.
STAGE_ARGUMENTS: list[type] = [ModelArguments, DataArguments, TrainingArguments, ObjectiveArguments,
                               SelectiveArguments]

# Options that do not change what a run computes (a run directory may be resumed with other values).
RUN_NEUTRAL_OPTIONS = {"overwrite_output_dir", "disable_tqdm", "logging_steps", "dataloader_num_workers",
                       "per_device_eval_batch_size", "save_steps", "num_threads"}


def parse_stage_args(extra: Sequence[type], argv: Sequence[str] | None) -> StageArgs:
    args = parse_args([*STAGE_ARGUMENTS, *extra], argv)
    if args.num_threads is not None:
        configure_threads(args.num_threads)
    if args.data_dir is None:
        args[DataArguments].data_dir = default_data_dir()
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SubnetsError(f"Data directory {args.data_dir} does not exist; expected a folder laid out like the "
                           f"offline data folder (glue/, hans/, ...) or no --data_dir to use the hub.")
    if not args.output_dir:
        raise SubnetsError("No --output_dir given; expected a directory for this run's checkpoints and metrics.")
    return args


def _comparable(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{group}.{k}": v for group, values in config.items() if isinstance(values, dict)
            for k, v in values.items() if k not in RUN_NEUTRAL_OPTIONS}


def prepare_run_dir(args: StageArgs, stage: str) -> Path:
    """Create the run directory and write the resolved config; refuse a directory holding a different run.

    The same config means "resume": the training loop continues from checkpoint-last.
    """
    out = Path(args.output_dir)
    # through JSON, so that values compare as they read back (tuples become lists)
    config = json.loads(json.dumps({"stage": stage, **args.to_dict()}, default=str))
    config_path = out / "run_config.json"
    if config_path.exists() and not args.overwrite_output_dir:
        try:
            old = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise SubnetsError(f"{config_path} is not valid JSON; expected the config of a previous run.") from e
        before, now = _comparable(old), _comparable(config)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if old.get("stage") != stage or changed:
            what = f"stage {old.get('stage')}" if old.get("stage") != stage else \
                f"{changed[0]} = {before.get(changed[0])!r} there, {now.get(changed[0])!r} here"
            raise SubnetsError(f"Output directory {out} already holds a different run ({what}); expected a new "
                               f"--output_dir, the same options to resume, or --overwrite_output_dir.")
    elif out.exists() and any(out.iterdir()) and not config_path.exists() and not args.overwrite_output_dir:
        raise SubnetsError(f"Output directory {out} is not empty and holds no run; expected an empty or new directory "
                           f"(or --overwrite_output_dir).")
    if args.overwrite_output_dir and out.exists():
        for stale in ("checkpoint-last", "checkpoint-best", "metrics.json"):
            if (out / stale).exists():
                shutil.rmtree(out / stale) if (out / stale).is_dir() else (out / stale).unlink()
    atomic_write_json(config_path, config)
    return out


@dataclass
class TaskData:
    train: datasets.Dataset | None
    eval: datasets.Dataset | None


def load_task_data(args: StageArgs, task: TaskSpec, tokenizer: PreTrainedTokenizerBase, *,
                   train: bool = True) -> TaskData:
    """Tokenised train (fixed seeded sample if max_train_samples) and evaluation splits of a task."""
    def prepare(split: str, n: int | None, shuffle: bool) -> datasets.Dataset:
        raw = subsample(load_split(task, split, args.data_dir), n, shuffle=shuffle)
        return tokenize(raw, tokenizer, task, args.max_seq_length, pad_to_max_length=args.pad_to_max_length)

    return TaskData(train=prepare("train", args.max_train_samples, True) if train else None,
                    eval=prepare(task.eval_split, args.max_eval_samples, False))


@dataclass
class TrainingSetup:
    objective: Objective | None = None
    callbacks: list[Callback] = dataclasses.field(default_factory=list)
    optimizer_factory: OptimizerFactory | None = None


def build_training_setup(args: StageArgs, task: TaskSpec, data: TaskData) -> TrainingSetup:
    """The objective, callbacks and optimizer chosen by the method options (CE and AdamW by default)."""
    selective = build_selective(args[SelectiveArguments], seed=args.seed, objective_args=args[ObjectiveArguments])
    return TrainingSetup(objective=selective.objective or build_objective(args[ObjectiveArguments], task, data.train),
                         callbacks=selective.callbacks, optimizer_factory=selective.optimizer_factory)


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    atomic_write_json(out / "metrics.json", metrics)


def run_cli(main: Callable[[Sequence[str] | None], Any]) -> int:
    """Run a stage's `main`, turning user errors into one line on stderr and exit status 2."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        configure_threads()
        main(None)
    except SubnetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
