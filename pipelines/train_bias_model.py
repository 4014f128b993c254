"""Train a bias-only model and cache its per-example predictions for the debiasing losses (SRNets).

    subnets-bias-model --task_name mnli --data_dir DATA --output_dir runs/mnli-bias
    subnets-bias-model --task_name vitaminc --bias_type hypothesis_only --output_dir runs/vc-bias
    subnets-bias-model --task_name mnli --teacher_model runs/mnli-ft --output_dir runs/mnli-bias
    subnets-bias-model --train_file train.csv --validation_file dev.csv \
        --text_columns premise,hypothesis --output_dir runs/my-bias

Writes `bias_predictions.safetensors` (cross-fitted predictions for every training example, keyed by example
id; pass it as `--bias_predictions` to any stage), `metrics.json` (bias-model accuracy) and `run_config.json`.
With `--teacher_model` it also writes `teacher_predictions.safetensors` (for `--debias conf_reg`).
"""

from __future__ import annotations

import subnets.pipelines  # noqa: F401,I001  first: sets the OpenMP wait policy before torch loads
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from subnets.pipelines import RECIPE_DIR
from subnets.pipelines.common import run_cli
from subnets.config import check_at_least_one, parse_args
from subnets.data import Collator, default_data_dir, load_split, tokenize
from subnets.distributed import pick_device
from subnets.errors import SubnetsError
from subnets.evaluation import check_label_compatibility, predict, softmax
from subnets.io import atomic_write_json
from subnets.models import checkpoint_labels, load_classifier
from subnets.objectives.bias_model import BIAS_TYPES, train_bias_model
from subnets.objectives.predictions import PredictionCache, dataset_fingerprint
from subnets.registry import check_choice
from subnets.runs import BIAS_FILE, BIAS_MODEL, METRICS_FILE, TEACHER_FILE, claim_output_dir, write_run_config
from subnets.tasks import TaskSpec, get_task
from subnets.user_data import DataFileArguments, task_record, user_task

STAGE = BIAS_MODEL.id


@dataclass
class BiasModelArguments:
    _argument_group_name = "bias model"  # its --help section
    task_name: str | None = field(default=None, metadata={
        "help": "Training task whose bias is modelled (default mnli), or the name of a task read from --train_file."})
    output_dir: str | None = field(default=None, metadata={"help": "Directory for the predictions and metrics."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Local data folder; default: $SUBNETS_DATA_DIR, else the Hugging Face hub."})
    bias_type: str = field(default="overlap", metadata={
        "help": "overlap (linear model on lexical-overlap features) | hypothesis_only (bag of words of the "
                "hypothesis / claim)."})
    folds: int = field(default=5, metadata={"help": "Cross-fitting folds for the training-split predictions."})
    l2: float = field(default=50.0, metadata={
        "help": "L2 penalty of the logistic regression: l2 / 2 * ||W||^2 added to the summed log-loss."})
    seed: int = field(default=0, metadata={"help": "Seed of the fold assignment."})
    teacher_model: str | None = field(default=None, metadata={
        "help": "Also cache this fine-tuned model's predictions (stage-1 run dir) as conf_reg's teacher."})
    max_seq_length: int = field(default=128, metadata={"help": "Teacher inputs are truncated to this length."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Teacher inference batch size."})
    use_cpu: bool = field(default=False, metadata={
        "help": "Run the teacher on the CPU even where CUDA is available (also $SUBNETS_USE_CPU=1)."})

    def __post_init__(self) -> None:
        """Reject bad values while parsing, before anything is written."""
        check_choice("bias_type", self.bias_type, BIAS_TYPES)
        if not self.l2 >= 0:
            raise SubnetsError(f"--l2 must be a non-negative penalty; got {self.l2}.")
        check_at_least_one(self, ("per_device_eval_batch_size", "max_seq_length"))


def load_teacher(model_path: str, task: TaskSpec) -> tuple[torch.nn.Module, Any]:
    """The fine-tuned teacher with its own head; refused if its labels are not the task's (a new random head
    would give meaningless teacher probabilities)."""
    path, labels = checkpoint_labels(model_path)
    model, tokenizer = load_classifier(path, labels)
    check_label_compatibility(labels, task, task, f"teacher model {model_path}")
    return model, tokenizer


def teacher_predictions(model: torch.nn.Module, tokenizer: Any, task: TaskSpec, train,
                        args: BiasModelArguments) -> PredictionCache:
    """The softmax of a fine-tuned classifier on every training example (the conf_reg teacher)."""
    device = pick_device(use_cpu=args.use_cpu)
    model.to(device)
    tokenized = tokenize(train, tokenizer, task, args.max_seq_length)
    probs = softmax(predict(model, tokenized, Collator(tokenizer), args.per_device_eval_batch_size, device))
    ids, labels = np.asarray(train["idx"]), np.asarray(train["label"])
    return PredictionCache(ids, probs, labels, task.name, dataset_fingerprint(ids, labels), kind="teacher")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, files = parse_args([BiasModelArguments, DataFileArguments], argv, recipe_dir=RECIPE_DIR).instances
    if not args.output_dir:
        raise SubnetsError("No --output_dir given; expected a directory for the bias predictions.")
    out = Path(args.output_dir)
    claim_output_dir(out, STAGE)
    data_dir = args.data_dir or default_data_dir()
    task = user_task(files, args.task_name) if files.given else get_task(args.task_name or "mnli", trainable=True)
    if not task.trainable:
        raise SubnetsError("No --train_file given; expected the training file whose bias is modelled.")
    train = load_split(task, "train", data_dir)
    evaluation = load_split(task, task.eval_split, data_dir)
    teacher_model = load_teacher(args.teacher_model, task) if args.teacher_model else None
    result = train_bias_model(task, train, evaluation, bias_type=args.bias_type, folds=args.folds, seed=args.seed,
                              l2=args.l2)
    teacher = teacher_predictions(*teacher_model, task, train, args) if teacher_model is not None else None
    user = {"task": task_record(task)} if task.user else {}
    write_run_config(out, {"stage": STAGE, **vars(args), "task_name": task.name, "data_dir": data_dir, **user})
    result.cache.save(out / BIAS_FILE)
    metrics = dict(result.metrics, fingerprint=result.cache.fingerprint, bias_predictions=str(out / BIAS_FILE))
    if teacher is not None:
        teacher.save(out / TEACHER_FILE)
        metrics["teacher_train_accuracy"] = float((teacher.probs.argmax(1) == teacher.labels).mean())
        metrics["teacher_predictions"] = str(out / TEACHER_FILE)
    atomic_write_json(out / METRICS_FILE, metrics)
    print("\n".join(f"{k}: {v}" for k, v in metrics.items() if not isinstance(v, list)))
    return metrics



def cli() -> int:
    """The `subnets-bias-model` console command (the same as `python -m subnets.pipelines.train_bias_model`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
