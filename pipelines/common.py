"""What every stage script shares: argument parsing and the skeleton of a stage (`run_stage`; its run folder:
`subnets.runs`)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no model classes
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from subnets.pipelines import RECIPE_DIR
from subnets.config import DataArguments, ModelArguments, StageArgs, TrainingArguments, parse_args
from subnets.data import default_data_dir
from subnets.distributed import init_distributed, is_main_process
from subnets.errors import SubnetsError
from subnets.io import atomic_write_json, check_writable_dir
from subnets.models import load_classifier
from subnets.parts import TaskData, build_training_parts, load_task_data, method_arguments
from subnets.registry import OptionGroups
from subnets.runs import METRICS_FILE, RESULTS_FILE, check_run_dir, run_directory, run_task
from subnets.tasks import TaskSpec, get_task
from subnets.user_data import DataFileArguments, check_label_names, user_task
from subnets.threads import configure_threads
from subnets.training import TrainingParts, best_metric, set_seed

# Argument dataclasses every training stage takes (the method registries' option groups included); method
# packages append theirs.
STAGE_ARGUMENTS: list[type] = [ModelArguments, DataArguments, DataFileArguments, TrainingArguments,
                               *method_arguments()]
DEFAULT_TASK = "sst2"


def parse_stage_args(extra: Sequence[type], argv: Sequence[str] | None) -> StageArgs:
    args = parse_args([*STAGE_ARGUMENTS, *extra], argv, recipe_dir=RECIPE_DIR)
    if args[TrainingArguments].num_threads is not None:
        configure_threads(args[TrainingArguments].num_threads)
    if args.data_dir is None:
        args[DataArguments].data_dir = default_data_dir()
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise SubnetsError(f"Data directory {args.data_dir} does not exist; expected a folder laid out like the "
                           f"offline data folder (glue/, hans/, ...) or no --data_dir to use the hub.")
    if not args.output_dir:
        raise SubnetsError("No --output_dir given; expected a directory for this run's checkpoints and metrics.")
    check_writable_dir(args.output_dir)
    return args


def resolve_task(args: StageArgs, source: str | None) -> TaskSpec:
    """The task a stage trains on: the user's data files, else --task_name, else the task of the run directory
    it starts from (`source`), else sst2. The resolved name goes into the run's config."""
    files = args[DataFileArguments]
    recorded = run_task(source)
    if files.given:
        task = user_task(files, args.task_name)
        if not task.trainable:
            raise SubnetsError("No --train_file given; expected a training file beside --validation_file/--test_file.")
    elif args.task_name and not (recorded is not None and recorded.user and recorded.name == args.task_name):
        task = get_task(args.task_name, trainable=True)
    else:
        task = recorded or get_task(DEFAULT_TASK, trainable=True)
    check_label_names(files, task)
    args[DataArguments].task_name = task.name
    best_metric(args[TrainingArguments], task)  # an unknown --metric_for_best_model fails before any training
    return task


@dataclass
class StageRun:
    """What `run_stage` prepared for a stage's `train`: the options, task, model, data and training parts."""

    stage: str
    args: StageArgs
    task: TaskSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    data: TaskData
    parts: TrainingParts
    loaded: Any = None  # what the stage's `load` found beside the model (stage 3: its ticket and mask record)

    @property
    def training(self) -> TrainingArguments:
        return self.args[TrainingArguments]


# A stage's part of the skeleton: build its trainer (checking every input) and return the work done in the run
# directory, which returns the metrics.
StageTrain = Callable[[StageRun], Callable[[Path], dict[str, Any]]]
Loaded = tuple["PreTrainedModel", "PreTrainedTokenizerBase", Any]


def model_path(args: StageArgs) -> str:
    """--model_name_or_path: the model a stage starts from and the run its task defaults to."""
    return args[ModelArguments].model_name_or_path


def load_model(args: StageArgs, task: TaskSpec) -> Loaded:
    """The classifier of --model_name_or_path with the task's labels."""
    return (*load_classifier(model_path(args), task.label_names), None)


def run_stage(stage: str, argv: Sequence[str] | None, train: StageTrain, *, arguments: Sequence[type] = (),
              source: Callable[[StageArgs], str | None] = model_path, check: Callable[[StageArgs], None] | None = None,
              load: Callable[[StageArgs, TaskSpec], Loaded] = load_model) -> dict[str, Any]:
    """The skeleton of every training stage; returns its metrics.

    Parse the stage options (`arguments` beside `STAGE_ARGUMENTS`), resolve the task (that of the run `source(args)`
    names, by default), check the run directory and `check` the stage's own options (nothing written yet), seed,
    `load` the model, load the data, build the training parts, join the process group under torchrun; then
    `train(run)` builds the stage's trainer and the work it returns runs in the run directory (created once every
    input is checked), whose metrics are written there.
    """
    args = parse_stage_args(arguments, argv)
    task = resolve_task(args, source(args))
    check_run_dir(args, stage, task)
    if check is not None:
        check(args)
    set_seed(args.seed)
    model, tokenizer, loaded = load(args, task)
    data = load_task_data(args[DataArguments], task, tokenizer)
    parts = build_training_parts(OptionGroups(args.instances), task, data.train)
    training = args[TrainingArguments]
    init_distributed(training.use_cpu, training.ddp_backend)  # under torchrun: the process group the Trainer trains in
    work = train(StageRun(stage, args, task, model, tokenizer, data, parts, loaded))
    with run_directory(args, stage, task) as out:  # only once every input has been checked
        metrics = work(out)
        write_metrics(out, metrics)
    return metrics


def write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    """The stage's final metrics: metrics.json and, under HF's name, all_results.json (the same dict), then printed
    as HF's metrics boxes; by the main process only (under torchrun the other ranks may hold no eval_* metrics)."""
    if not is_main_process():
        return
    atomic_write_json(out / METRICS_FILE, metrics)
    atomic_write_json(out / RESULTS_FILE, metrics)
    print(metrics_boxes(metrics), flush=True)


def metrics_boxes(metrics: dict[str, Any]) -> str:
    """HF's `Trainer.log_metrics` layout: a "***** train metrics *****" box (train_* and epoch), then eval, test
    and the run's other scalar metrics (sparsity, ...); nested values (mask ids, configs) stay in metrics.json."""
    groups: dict[str, dict[str, Any]] = {"train": {}, "eval": {}, "test": {}, "run": {}}
    for key, value in metrics.items():
        if isinstance(value, (dict, list, tuple)):
            continue
        group = "train" if key == "epoch" else key.split("_")[0] if key.split("_")[0] in groups else "run"
        groups[group][key] = round(value, 4) if isinstance(value, float) else value
    boxes = []
    for name, values in groups.items():
        if values:
            width = max(map(len, values))
            lines = [f"  {key:<{width}} = {value!s:>11}" for key, value in sorted(values.items())]
            boxes.append("\n".join([f"***** {name} metrics *****", *lines]))
    return "\n".join(boxes)


def run_cli(main: Callable[[Sequence[str] | None], Any]) -> int:
    """Run a stage's `main`, turning user errors into one line on stderr and exit status 2."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # read when datasets loads (parsing does not)
    if "datasets" in sys.modules:  # loaded already (a command run in-process)
        sys.modules["datasets"].disable_progress_bars()
    try:
        configure_threads()
        main(None)
    except SubnetsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
