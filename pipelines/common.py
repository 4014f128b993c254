"""What every stage script shares: argument parsing, the run directory and the skeleton of a stage (`run_stage`)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from pipelines import RECIPE_DIR
from subnets.config import (RUN_NEUTRAL_OPTIONS, DataArguments, ModelArguments, StageArgs, TrainingArguments,
                            parse_args)
from subnets.data import data_hashes, default_data_dir, selection_split
from subnets.distributed import init_distributed, is_main_process
from subnets.errors import SubnetsError
from subnets.io import LOCK_FILE, atomic_write_json, check_writable_dir, directory_lock, empty_run_folder
from subnets.masking.sources import run_chain
from subnets.models import MINILM_ALIAS, load_classifier
from subnets.parts import TaskData, build_training_parts, load_task_data, method_arguments
from subnets.registry import OptionGroups
from subnets.tasks import TaskSpec, get_task
from subnets.user_data import DataFileArguments, check_label_names, task_from_record, task_record, user_task
from subnets.threads import configure_threads
from subnets.training import RESULTS_FILE, TrainingParts, best_metric, set_seed

# Argument dataclasses every training stage takes (the method registries' option groups included); method
# packages append theirs.
STAGE_ARGUMENTS: list[type] = [ModelArguments, DataArguments, DataFileArguments, TrainingArguments,
                               *method_arguments()]
DEFAULT_TASK = "sst2"

# Options naming files or folders: recorded and compared as absolute paths, so that `runs/x`, `./runs/x/` and
# the same folder seen from another working directory are one run.
PATH_OPTIONS = {"model_name_or_path", "data_dir", "mask", "mask_store", "bias_predictions", "calibration_file",
                "teacher_predictions", "wordnet_dir"}
RUN_CONFIG_FILE = "run_config.json"
DATA_FILES = "data_files"  # run_config.json: {path: sha256} of the data files the run reads
DATA_CHANGES = "accepted_data_changes"  # run_config.json: the changed files --allow_changed_data accepted


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


def run_task(path: str | None) -> TaskSpec | None:
    """The task a stage run directory (or the run it started from) trained on; None for anything else."""
    for _, config in run_chain(path) if path else []:
        if "task" in config:
            return task_from_record(config["task"])
        name = config.get("DataArguments", {}).get("task_name")
        if name:
            return get_task(name)
    return None


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


def absolute_path(value: Any) -> Any:
    """A file or folder name as an absolute path (resolving `..` and links); other values as they are."""
    if not isinstance(value, str) or not value or value == MINILM_ALIAS:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if os.sep in value or path.exists() else value


def build_run_config(args: StageArgs, stage: str, task: TaskSpec | None = None) -> dict[str, Any]:
    """The config recorded in run_config.json: every option (with the user task, if any, under "task"), paths
    made absolute, through JSON (tuples become lists) so that values compare as they read back."""
    user = {"task": task_record(task)} if task is not None and task.user else {}
    data = {DATA_FILES: data_hashes(task, ("train", task.eval_split), args.data_dir)} if task is not None else {}
    selection = {"selection_split": selection_split(task, args[DataArguments].validation_split_percentage)} \
        if task is not None else {}
    config = {"stage": stage, **args.to_dict(), **user, **data, **selection}
    for values in config.values():
        if isinstance(values, dict):
            values.update({k: absolute_path(v) for k, v in values.items() if k in PATH_OPTIONS})
    return json.loads(json.dumps(config, default=str))


def _comparable(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {f"{group}.{k}": absolute_path(v) if k in PATH_OPTIONS else v for group, values in config.items()
            if isinstance(values, dict) and group not in (DATA_FILES, DATA_CHANGES)
            for k, v in values.items() if k not in RUN_NEUTRAL_OPTIONS}


def data_changes(old: dict[str, Any], now: dict[str, Any]) -> list[dict[str, str | None]]:
    """The data files whose content differs from what a run recorded when it started (none for a run recorded
    without hashes)."""
    before, after = old.get(DATA_FILES), now.get(DATA_FILES, {})
    if before is None:
        return []
    return [{"file": f, "before": before.get(f), "after": after.get(f)} for f in sorted(set(before) | set(after))
            if before.get(f) != after.get(f)]


def read_run_stage(out: Path) -> str | None:
    """The command whose run a folder holds (the `stage` of its run_config.json), None if it holds none."""
    config_path = out / RUN_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        return str(json.loads(config_path.read_text())["stage"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SubnetsError(f"{config_path} is not a valid run config; expected the config of a previous run.") from e


def claim_output_dir(out: Path, command: str) -> None:
    """Refuse an output folder that holds another command's run or a model (a command never writes into them)."""
    check_writable_dir(out)
    stage = read_run_stage(out)
    if stage is not None and stage != command:
        raise SubnetsError(f"Output directory {out} holds a {stage} run; expected a new directory for {command} "
                           f"(it would overwrite that run's files).")
    if (out / "config.json").is_file():
        raise SubnetsError(f"Output directory {out} holds a model (config.json); expected a new directory.")


def check_run_dir(args: StageArgs, stage: str, task: TaskSpec | None = None) -> Path:
    """Refuse a run directory holding a different run (or other files); writes nothing.

    The same config means "resume": the training loop continues from checkpoint-last. With
    --overwrite_output_dir a folder holding a run of this toolkit is emptied (`prepare_run_dir`), never a
    foreign folder, nor one that holds an input of this run. Under torchrun rank 0 checks (the others would race
    with its writes); its refusal ends the launch.
    """
    out = Path(args.output_dir)
    if not is_main_process():
        return out
    check_writable_dir(out)
    config_path = out / RUN_CONFIG_FILE
    if not config_path.exists():
        if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
            raise SubnetsError(f"Output directory {out} is not empty and holds no run; expected an empty or new "
                               f"directory (--overwrite_output_dir only replaces a run of this toolkit).")
        return out
    config = build_run_config(args, stage, task)
    if args[TrainingArguments].overwrite_output_dir:
        read_run_stage(out)  # a damaged run config: not a folder to empty
        inside = [f"--{key} {value}" for values in config.values() if isinstance(values, dict)
                  for key, value in values.items() if key in PATH_OPTIONS and _lies_in(value, out)]
        if inside:
            raise SubnetsError(f"--overwrite_output_dir would delete {inside[0]}, which lies in the output directory "
                               f"{out}; expected this run's inputs outside the folder it replaces.")
        return out
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
    edited = data_changes(old, config)
    if edited and not allows_changed_data(args):
        raise SubnetsError(f"Data file {edited[0]['file']} changed since the run in {out} started (its content "
                           f"hash differs); expected the same data to resume it, --allow_changed_data to resume on "
                           f"the changed data (recorded in its run_config.json), or a new --output_dir.")
    return out


def allows_changed_data(args: StageArgs) -> bool:
    """--allow_changed_data (False for a command without data options: it reads no data)."""
    return any(isinstance(group, DataArguments) and group.allow_changed_data for group in args.instances)


def _lies_in(value: Any, directory: Path) -> bool:
    """Whether a path option's value is an existing file or folder in `directory` (or the directory itself)."""
    if not isinstance(value, str) or not value or not Path(value).exists():
        return False
    return Path(value).resolve().is_relative_to(directory.resolve())


def prepare_run_dir(args: StageArgs, stage: str, task: TaskSpec | None = None) -> Path:
    """Check the run directory (see `check_run_dir`), create it and write run_config.json (main process only);
    with --overwrite_output_dir the earlier run's files go first (all of them: a run is what its command says)."""
    out = check_run_dir(args, stage, task)
    if not is_main_process():
        return out  # rank 0 writes the config
    if args[TrainingArguments].overwrite_output_dir and out.exists():
        empty_run_folder(out)
    config, edited = build_run_config(args, stage, task), []
    if (out / RUN_CONFIG_FILE).exists():  # a resume: keep the accepted data changes
        old = json.loads((out / RUN_CONFIG_FILE).read_text())
        edited = data_changes(old, config)
        accepted = old.get(DATA_CHANGES, []) + edited
        config.update({DATA_CHANGES: accepted} if accepted else {})
    if allows_changed_data(args) and not edited:
        print(f"warning: --allow_changed_data has no effect: {out} holds no run whose data files changed.",
              file=sys.stderr)
    atomic_write_json(out / RUN_CONFIG_FILE, config)
    return out


@contextlib.contextmanager
def run_directory(args: StageArgs, stage: str, task: TaskSpec | None = None) -> Iterator[Path]:
    """`prepare_run_dir` under the run lock, held until the block ends: call it once every input is checked.

    Under torchrun only the first process locks and writes.
    """
    with directory_lock(args.output_dir, enabled=is_main_process()):
        yield prepare_run_dir(args, stage, task)


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
    atomic_write_json(out / "metrics.json", metrics)
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
