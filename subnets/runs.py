"""The run folder: the names of what a stage writes into its --output_dir, the stages' identifiers, the run's
`run_config.json` (checked before anything is written, compared on resume) and the walks from a run back to the
run and the model it started from.

A stage run folder holds `run_config.json` (every option, the task, the data files' hashes), `metrics.json` and
`all_results.json` (the final metrics, the second under HF's name), `checkpoint-last/`, `checkpoint-best/` and
`checkpoint-step-<k>/` (written by `subnets.checkpointing`), `trainer_state.json`, and per stage: `masks.json`
(stage 2), `predict_results.txt` (stage 1 with a --test_file), `predictions/`, `attacks/` and `results.md`
(evaluate), the cached bias-model and teacher predictions (train_bias_model).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from .checkpointing import BEST, LAST  # noqa: F401  the checkpoint folders' names, where they are written
from .config import RUN_NEUTRAL_OPTIONS, DataArguments, StageArgs, TrainingArguments
from .data import data_hashes, selection_split
from .distributed import is_main_process
from .errors import SubnetsError
from .io import LOCK_FILE, atomic_write_json, check_writable_dir, directory_lock, empty_run_folder
from .models import MINILM_ALIAS
from .tasks import TaskSpec, get_task
from .user_data import task_from_record, task_record

RUN_CONFIG_FILE = "run_config.json"
METRICS_FILE = "metrics.json"  # the stage's final metrics
RESULTS_FILE = "all_results.json"  # the same metrics under HF's name (also the Trainer's end-of-training summary)
RUN_MASKS_FILE = "masks.json"  # stage 2: {"state": id-or-file, "ticket": id-or-file, "store": folder}
PREDICT_RESULTS_FILE = "predict_results.txt"  # stage 1 with a user --test_file: index<TAB>predicted label name
PREDICTIONS_DIR = "predictions"  # evaluate: predictions/<checkpoint name>/<set>.json, per-example predictions
ATTACKS_DIR = "attacks"  # evaluate: attacks/<checkpoint name>/<set>_<attack>: each attack's outputs
RESULTS_TABLE_FILE = "results.md"  # evaluate: the methods side by side
BIAS_FILE = "bias_predictions.safetensors"  # train_bias_model: cross-fitted bias-model predictions
TEACHER_FILE = "teacher_predictions.safetensors"  # train_bias_model --teacher_model: conf_reg's teacher
DATA_FILES = "data_files"  # run_config.json: {path: sha256} of the data files the run reads
DATA_CHANGES = "accepted_data_changes"  # run_config.json: the changed files --allow_changed_data accepted

# Options naming files or folders: recorded and compared as absolute paths, so that `runs/x`, `./runs/x/` and
# the same folder seen from another working directory are one run.
PATH_OPTIONS = {"model_name_or_path", "data_dir", "mask", "mask_store", "bias_predictions", "calibration_file",
                "teacher_predictions", "wordnet_dir"}


@dataclass(frozen=True)
class StageName:
    """A stage's names. Its script is the module named `id` in the stage scripts' package (`python -m
    subnets.pipelines.<id>`)."""

    id: str  # the `stage` its run_config.json records
    key: str  # its name in sweeps and reproductions (`subnets-sweep --stages bias,stage1,...`)
    command: str  # its console command


BIAS_MODEL = StageName("train_bias_model", "bias", "subnets-bias-model")  # the debiasing losses' bias-only model
FINETUNE = StageName("stage1_finetune", "stage1", "subnets-finetune")
SEARCH = StageName("stage2_search", "stage2", "subnets-search")
RETRAIN = StageName("stage3_retrain", "stage3", "subnets-retrain")
EVALUATE = StageName("evaluate", "evaluate", "subnets-evaluate")
STAGES = (BIAS_MODEL, FINETUNE, SEARCH, RETRAIN, EVALUATE)  # in the order a chain runs them


# --- run_config.json -------------------------------------------------------------------------------------------

def run_config(path: str | os.PathLike) -> dict | None:
    """The `run_config.json` of a stage run directory, or None for anything else (a model name or path)."""
    config = Path(path) / RUN_CONFIG_FILE
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise SubnetsError(f"{config} is not valid JSON; expected the config a stage wrote.") from e


def write_run_config(out: Path, config: Mapping[str, Any]) -> None:
    """Record a run's config in its folder (atomically)."""
    atomic_write_json(out / RUN_CONFIG_FILE, config)


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
    write_run_config(out, config)
    return out


@contextlib.contextmanager
def run_directory(args: StageArgs, stage: str, task: TaskSpec | None = None) -> Iterator[Path]:
    """`prepare_run_dir` under the run lock, held until the block ends: call it once every input is checked.

    Under torchrun only the first process locks and writes.
    """
    with directory_lock(args.output_dir, enabled=is_main_process()):
        yield prepare_run_dir(args, stage, task)


def claim_api_run_dir(command: str, args: TrainingArguments, model: torch.nn.Module, task: TaskSpec, data: Any,
                      **inputs: Any) -> None:
    """The stages' rule for the run folder of a `subnets.api` call: a run is resumed only by the call that made
    it. A new or empty folder is claimed (its run_config.json names the call, its options, task, data sizes (of
    `data.train`, None or a dataset, and `data.eval`) and the starting weights' fingerprint); the same call
    resumes the run there; any other run, or a folder holding something else, is refused;
    `overwrite_output_dir=True` first empties a folder that holds a run of this toolkit."""
    from subnets.masks import model_fingerprint

    out = Path(args.output_dir)
    check_writable_dir(out)
    options = {k: v for k, v in dataclasses.asdict(args).items() if k not in RUN_NEUTRAL_OPTIONS}
    config = json.loads(json.dumps({
        "stage": f"api.{command}", "task": task.name, "model_fingerprint": model_fingerprint(model),
        "examples": [0 if data.train is None else len(data.train), len(data.eval)], "options": options, **inputs,
    }, default=str))
    path = out / RUN_CONFIG_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise SubnetsError(f"{path} is not valid JSON; expected the config of a previous run.") from e
        if args.overwrite_output_dir:
            empty_run_folder(out)
        elif old != config:
            what = (f"a {old.get('stage')} run" if old.get("stage") != config["stage"] else
                    "a run of other " + ", ".join(k for k in config if old.get(k) != config[k]))
            raise SubnetsError(f"Output directory {out} already holds {what}; expected a new output_dir, the same "
                               f"call to resume that run, or overwrite_output_dir=True.")
    elif out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise SubnetsError(f"Output directory {out} is not empty and holds no run; expected an empty or new "
                           f"directory (overwrite_output_dir=True only replaces a run of this toolkit).")
    write_run_config(out, config)


# --- walks from a run back to its source -----------------------------------------------------------------------

def run_model_source(run_dir: str | os.PathLike) -> str | None:
    """The `model_name_or_path` a stage run started from (None if `run_dir` is not a run directory)."""
    config = run_config(run_dir)
    return None if config is None else config["ModelArguments"]["model_name_or_path"]


def run_chain(source: str) -> list[tuple[str, dict[str, Any]]]:
    """The run directories behind `source`, each with its run config, `source` first, following every run's
    `model_name_or_path` ([] if `source` is not a run directory). A chain that comes back to one of its run
    directories (a run that names itself as its model) is a clear error, not an endless loop."""
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: dict[Path, str] = {}
    config = run_config(source)
    while config is not None:
        key = Path(source).resolve()
        if key in seen:
            raise SubnetsError(f"Run directory {seen[key]} started from itself (following model_name_or_path from "
                               f"{chain[0][0]} comes back to it); expected a chain of runs that ends at a model.")
        seen[key] = source
        chain.append((source, config))
        source = config.get("ModelArguments", {}).get("model_name_or_path") or ""
        config = run_config(source) if source else None
    return chain


def run_task(path: str | None) -> TaskSpec | None:
    """The task a stage run directory (or the run it started from) trained on; None for anything else."""
    for _, config in run_chain(path) if path else []:
        if "task" in config:
            return task_from_record(config["task"])
        name = config.get("DataArguments", {}).get("task_name")
        if name:
            return get_task(name)
    return None


def finetuned_run(source: str) -> str | None:
    """The stage-1 run directory behind `source` (a stage-1 or stage-2 run directory), if any."""
    return next((path for path, config in run_chain(source) if config.get("stage") == FINETUNE.id), None)


def pretrained_source(source: str) -> str:
    """The pre-trained model behind a chain of run directories (or `source` itself)."""
    chain = run_chain(source)
    return chain[-1][1]["ModelArguments"]["model_name_or_path"] if chain else source


def model_source(mask: str, model_name_or_path: str, explicit: bool) -> str:
    """Stage 3's model to retrain: an explicit --model_name_or_path, else the one the stage-2 run `mask` (a run
    directory, else a store id or file) started from."""
    run_source = run_model_source(mask)
    if run_source is None:
        return model_name_or_path
    if not explicit:
        return run_source
    if absolute_path(model_name_or_path) != absolute_path(run_source):
        print(f"warning: --model_name_or_path {model_name_or_path} is used, not {run_source}, the model the "
              f"mask's run {mask} started from.", file=sys.stderr)
    return model_name_or_path
