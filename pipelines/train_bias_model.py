"""Train a bias-only model and cache its per-example predictions for the debiasing losses (SRNets).

    python pipelines/train_bias_model.py --task_name mnli --data_dir DATA --output_dir runs/mnli-bias
    python pipelines/train_bias_model.py --task_name vitaminc --bias_type hypothesis_only --output_dir runs/vc-bias
    python pipelines/train_bias_model.py --task_name mnli --teacher_model runs/mnli-ft --output_dir runs/mnli-bias

Writes `bias_predictions.safetensors` (cross-fitted predictions for every training example, keyed by example
id; pass it as `--bias_predictions` to any stage), `metrics.json` (bias-model accuracy) and `run_config.json`.
With `--teacher_model` it also writes `teacher_predictions.safetensors` (for `--debias conf_reg`).
"""

from __future__ import annotations

import pipelines  # noqa: F401,I001  first: sets the OpenMP wait policy before torch loads
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pipelines.common import run_cli
from subnets.config import parse_args
from subnets.data import Collator, default_data_dir, load_split, tokenize
from subnets.errors import SubnetsError
from subnets.evaluation import predict, softmax
from subnets.io import atomic_write_json
from subnets.models import load_classifier
from subnets.objectives.bias_model import BIAS_TYPES, train_bias_model
from subnets.objectives.debias import PredictionCache, dataset_fingerprint
from subnets.tasks import TaskSpec, get_task

BIAS_FILE = "bias_predictions.safetensors"
TEACHER_FILE = "teacher_predictions.safetensors"


@dataclass
class BiasModelArguments:
    task_name: str = field(default="mnli", metadata={"help": "Training task whose bias is modelled."})
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


def teacher_predictions(model_path: str, task: TaskSpec, train, args: BiasModelArguments) -> PredictionCache:
    """The softmax of a fine-tuned classifier on every training example (the conf_reg teacher)."""
    model, tokenizer = load_classifier(model_path, task.label_names)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tokenized = tokenize(train, tokenizer, task, args.max_seq_length)
    probs = softmax(predict(model, tokenized, Collator(tokenizer), args.per_device_eval_batch_size, device))
    ids, labels = np.asarray(train["idx"]), np.asarray(train["label"])
    return PredictionCache(ids, probs, labels, task.name, dataset_fingerprint(ids, labels), kind="teacher")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args: BiasModelArguments = parse_args([BiasModelArguments], argv)[BiasModelArguments]
    if not args.output_dir:
        raise SubnetsError("No --output_dir given; expected a directory for the bias predictions.")
    if args.bias_type not in BIAS_TYPES:
        raise SubnetsError(f"--bias_type must be one of {', '.join(BIAS_TYPES)}, got '{args.bias_type}'.")
    data_dir = args.data_dir or default_data_dir()
    task = get_task(args.task_name, trainable=True)
    train = load_split(task, "train", data_dir)
    evaluation = load_split(task, task.eval_split, data_dir)
    result = train_bias_model(task, train, evaluation, bias_type=args.bias_type, folds=args.folds, seed=args.seed,
                              l2=args.l2)
    out = Path(args.output_dir)
    atomic_write_json(out / "run_config.json", {"stage": "train_bias_model", **vars(args), "data_dir": data_dir})
    result.cache.save(out / BIAS_FILE)
    metrics = dict(result.metrics, fingerprint=result.cache.fingerprint, bias_predictions=str(out / BIAS_FILE))
    if args.teacher_model:
        teacher = teacher_predictions(args.teacher_model, task, train, args)
        teacher.save(out / TEACHER_FILE)
        metrics["teacher_train_accuracy"] = float((teacher.probs.argmax(1) == teacher.labels).mean())
        metrics["teacher_predictions"] = str(out / TEACHER_FILE)
    atomic_write_json(out / "metrics.json", metrics)
    print("\n".join(f"{k}: {v}" for k, v in metrics.items() if not isinstance(v, list)))
    return metrics


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
