"""Evaluate one or more checkpoints on one or more tasks / evaluation sets.

    python -m subnets.pipelines.evaluate --checkpoint runs/sst2-ft --checkpoint runs/sst2-ticket \
        --tasks sst2,advglue-sst2 --data_dir DATA --output_dir runs/eval
    python -m subnets.pipelines.evaluate --checkpoint runs/my-ft --validation_file dev.csv --test_file test.csv \
        --text_columns sentence --output_dir runs/my-eval

Your own files (--validation_file, --test_file) are evaluated as the sets <task> and <task>-test, where <task> is
the name of the user task the first checkpoint's run trained on (default: custom); their labels are --label_names,
else that run's, else the checkpoint's.

Without --tasks or data files the sets are the task the first checkpoint's run trained on (a user task: its own
validation and test files), else sst2; with --attack_file alone, none (an attack-only evaluation). A checkpoint
whose labels are not a set's is refused before anything is written.

Writes `metrics.json` ({checkpoint: {set: {HF-style keys}}}), `results.md` (methods side by side) and every set's
per-example predictions (`predictions/<checkpoint>/<set>.json`, for paired comparisons: docs/reproduce.md).
A checkpoint is a `from_pretrained` directory or a stage run directory (its checkpoint-best/).
"""

from __future__ import annotations

import subnets.pipelines  # noqa: F401,I001  first: sets the OpenMP wait policy before torch loads
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from subnets.pipelines import RECIPE_DIR
from subnets.pipelines.common import run_cli
from subnets.attacks import ATTACKS, AttackOptions
from subnets.attacks.pipeline import attack_examples, attack_tables, file_examples, is_attackable, task_examples
from subnets.config import check_at_least_one, parse_args
from subnets.data import Collator, default_data_dir, load_split, subsample, tokenize
from subnets.distributed import pick_device
from subnets.errors import SubnetsError
from subnets.evaluation import check_label_compatibility, compute_metrics, predict, predicted_labels
from subnets.io import atomic_write_json, atomic_write_text
from subnets.models import checkpoint_labels, load_classifier
from subnets.ood import ood_metrics
from subnets.runs import (ATTACKS_DIR, EVALUATE, METRICS_FILE, PREDICTIONS_DIR, RESULTS_TABLE_FILE, claim_output_dir,
                         run_task, write_run_config)
from subnets.tasks import TaskSpec, get_task
from subnets.user_data import DataFileArguments, check_label_names, user_task


STAGE = EVALUATE.id


@dataclass
class EvaluateArguments:
    _argument_group_name = "evaluation and attacks"  # its --help section
    checkpoint: list[str] = field(default_factory=list,
                                  metadata={"help": "Checkpoint or run directory (repeat the option for several)."})
    tasks: str | None = field(default=None, metadata={
        "help": "Comma-separated tasks / evaluation sets (default: the first checkpoint's run task, else sst2; "
                "none when data files or only --attack_file are given)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where metrics.json and results.md go."})
    data_dir: str | None = field(default=None, metadata={"help": "Local data folder (default $SUBNETS_DATA_DIR)."})
    max_eval_samples: int | None = None
    max_seq_length: int = 128
    per_device_eval_batch_size: int = 128
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (CPU always runs fp32)."})
    use_cpu: bool = field(default=False, metadata={
        "help": "Evaluate on the CPU even where CUDA is available (also $SUBNETS_USE_CPU=1)."})
    attack_file: str | None = field(default=None, metadata={
        "help": "Attack this TSV/CSV/JSONL instead of the evaluation sets."})
    attack_text_columns: str = field(default="sentence", metadata={
        "help": "Text column(s) of --attack_file: a or a,b (only b is modified)."})
    attack_label_column: str = field(default="label", metadata={
        "help": "Label column of --attack_file (ids or label names)."})
    ood_task: str | None = field(default=None, metadata={"help": "Task whose inputs are the out-of-distribution set."})

    def __post_init__(self) -> None:
        """Reject bad values while parsing, before anything is written (the attack's own: AttackOptions)."""
        check_at_least_one(self, ("per_device_eval_batch_size", "max_seq_length"))


FILE_SET_PREFIX = "file:"  # metrics.json key of an --attack_file's results: file:<file stem>


def checkpoint_names(paths: Sequence[str]) -> list[str]:
    """Short unique labels for checkpoints: the directory name, with parents added until unique."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(map(len, parts)):
            return names
        depth += 1


def load_for_eval(path: str) -> tuple[torch.nn.Module, Any, list[str]]:
    """The checkpoint's model and tokenizer, with the label names its own config declares."""
    path, labels = checkpoint_labels(path)
    return (*load_classifier(path, labels), labels)


def user_sets(files: DataFileArguments, first_checkpoint: str) -> list[TaskSpec]:
    """The evaluation sets of the user's --validation_file / --test_file (see the module docstring)."""
    if files.train_file:
        raise SubnetsError("--train_file is not used by evaluation; expected --validation_file or --test_file.")
    recorded = run_task(first_checkpoint)
    recorded = recorded if recorded is not None and recorded.user else None
    labels = None
    if not files.label_names:
        labels = recorded.label_names if recorded else tuple(checkpoint_labels(first_checkpoint)[1])
    return file_sets(user_task(files, recorded.name if recorded else None, labels))


def file_sets(task: TaskSpec) -> list[TaskSpec]:
    """A user task's evaluation sets: <task> (its validation file) and <task>-test (its test file), those it has."""
    return [dataclasses.replace(task, name=task.name if split == "validation" else f"{task.name}-{split}",
                                eval_split=split)
            for split in ("validation", "test") if split in task.local]


def evaluation_sets(args: EvaluateArguments, files: DataFileArguments) -> list[TaskSpec]:
    """--tasks and the user's files; with neither, none beside --attack_file (attack-only), else the task the first
    checkpoint's run trained on (its own files for a user task), else sst2 (see the module docstring)."""
    tasks = [get_task(t) for t in (args.tasks or "").split(",") if t]
    if files.given:
        return tasks + user_sets(files, args.checkpoint[0])
    if args.tasks is not None or args.attack_file:
        return tasks
    recorded = run_task(args.checkpoint[0])
    if recorded is None:
        return [get_task("sst2")]
    if recorded.user:
        sets = file_sets(recorded)
        if not sets:
            raise SubnetsError(f"The run of {args.checkpoint[0]} trained on task '{recorded.name}' without a validation "
                               f"or test file; expected --validation_file / --test_file or --tasks.")
        return sets
    return [recorded]


def check_sets(checkpoints: Sequence[str], tasks: Sequence[TaskSpec]) -> None:
    """Refuse, before anything is written, a checkpoint whose labels are not those of a set's task."""
    for path in checkpoints:
        labels = checkpoint_labels(path)[1]
        for task in tasks:
            check_label_compatibility(labels, task, task if task.user else get_task(task.classifier_task), path)


def evaluate_checkpoint(path: str, tasks: Sequence[TaskSpec], args: EvaluateArguments, attack: AttackOptions,
                        name: str = "") -> dict[str, dict[str, float]]:
    model, tokenizer, labels = load_for_eval(path)
    device = pick_device(use_cpu=args.use_cpu)
    model.to(device)

    def attacked(examples, set_name: str, file_stem: str) -> dict:
        print(attack_header(attack.attack, name or path, set_name), flush=True)
        return attack_examples(model, tokenizer, examples, attack,
                               Path(args.output_dir) / ATTACKS_DIR / name / f"{file_stem}_{attack.attack}",
                               max_length=args.max_seq_length, data_dir=args.data_dir, bf16=args.bf16,
                               use_cpu=args.use_cpu)

    def set_logits(task):
        raw = subsample(load_split(task, task.eval_split, args.data_dir), args.max_eval_samples, shuffle=False)
        tokenized = tokenize(raw, tokenizer, task, args.max_seq_length)
        return raw, predict(model, tokenized, Collator(tokenizer), args.per_device_eval_batch_size, device,
                            args.bf16, progress=f"evaluate {name or path} on {task.name}")

    out_logits = set_logits(get_task(args.ood_task))[1] if args.ood_task else None
    results = {}
    for task in tasks:
        raw, logits = set_logits(task)
        breakdown = raw[task.breakdown] if task.breakdown else None
        results[task.name] = compute_metrics(task, logits, np.asarray(raw["label"]), labels, breakdown)
        write_predictions(Path(args.output_dir) / PREDICTIONS_DIR / name / f"{task.name}.json",
                          predicted_labels(task, logits, labels), np.asarray(raw["label"]))
        if out_logits is not None:
            results[task.name].update(ood_metrics(logits, out_logits))
        if attack.attack != "none" and not args.attack_file and is_attackable(task, labels):
            results[task.name].update(attacked(task_examples(task, raw, attack), task.name, task.name))
    if attack.attack != "none" and args.attack_file:
        examples = file_examples(args.attack_file, args.attack_text_columns.split(","), args.attack_label_column,
                                 labels, attack)
        stem = Path(args.attack_file).stem
        results[f"{FILE_SET_PREFIX}{stem}"] = attacked(examples, f"{FILE_SET_PREFIX}{stem}", stem)
    return results


def attack_header(attack: str, checkpoint: str, set_name: str) -> str:
    """The line above an attack's progress bar and TextAttack summary box: which model and set it is."""
    return f"***** {attack} attack: model {checkpoint}, set {set_name} *****"


def write_predictions(path: Path, prediction: np.ndarray, gold: np.ndarray) -> None:
    """Per-example predictions of one set, in the set's order (`subnets.intervals` pairs rows on them):
    {"prediction": [label ids], "label": [gold ids]}."""
    atomic_write_json(path, {"prediction": prediction.tolist(), "label": gold.tolist()})


def markdown_table(results: dict[str, dict[str, dict[str, float]]],
                   tasks: dict[str, TaskSpec] | None = None) -> str:
    """Rows: checkpoints; columns: each set's main metric (accuracy, or weighted F1), its accuracy per gold label
    where the set has a breakdown (HANS: entailment, non-entailment), and ECE, in percent."""
    sets = list(dict.fromkeys(s for per in results.values() for s in per if not s.startswith(FILE_SET_PREFIX)))
    columns = []
    for s in sets:
        task = (tasks or {}).get(s) or get_task(s)
        columns.append((s, "f1" if task.metric == "f1" else "accuracy"))
        if task.breakdown:
            columns += [(s, f"accuracy_{label}") for label in task.label_names]
        columns.append((s, "ece"))
    if not columns:  # an attack-only evaluation: its attack tables say it all
        return ""
    header = "| checkpoint | " + " | ".join(f"{s} {m}" for s, m in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for name, per in results.items():
        cells = [f"{100 * per[s]['eval_' + m]:.2f}" if 'eval_' + m in per.get(s, {}) else "" for s, m in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, attack, files = parse_args([EvaluateArguments, AttackOptions, DataFileArguments], argv,
                                     recipe_dir=RECIPE_DIR).instances
    if args.attack_file and attack.attack == "none":
        raise SubnetsError("--attack_file was given without --attack; expected one of " + ", ".join(ATTACKS) + ".")
    if not args.checkpoint:
        raise SubnetsError("No --checkpoint given; expected at least one checkpoint or run directory.")
    if not args.output_dir:
        raise SubnetsError("No --output_dir given; expected a directory for metrics.json and results.md.")
    args.data_dir = args.data_dir or default_data_dir()
    tasks = evaluation_sets(args, files)
    for task in tasks:
        check_label_names(files, task)
    check_sets(args.checkpoint, tasks)
    if args.ood_task:
        get_task(args.ood_task)
    claim_output_dir(Path(args.output_dir), STAGE)
    results = {name: evaluate_checkpoint(path, tasks, args, attack, name)
               for name, path in zip(checkpoint_names(args.checkpoint), args.checkpoint)}
    out = Path(args.output_dir)
    write_run_config(out, {"stage": STAGE, **asdict(args), **asdict(attack)})
    atomic_write_json(out / METRICS_FILE, results)
    table = markdown_table(results, {t.name: t for t in tasks}) + (attack_tables(results, attack.attack)
                                                                   if attack.attack != "none" else "")
    atomic_write_text(out / RESULTS_TABLE_FILE, table)
    print(table)
    return results



def cli() -> int:
    """The `subnets-evaluate` console command (the same as `python -m subnets.pipelines.evaluate`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
