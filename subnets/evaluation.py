"""Predictions and metrics: accuracy, weighted F1, HANS breakdown, expected calibration error, AUROC."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedModel
import numpy as np
import torch
from tqdm.auto import tqdm

from .data import Collator, batch_reader
from .errors import SubnetsError
from .precision import autocast
from .tasks import TaskSpec

OTHER = "<other>"  # model labels with no counterpart in an evaluation set (always wrong there)


@torch.inference_mode()
def predict(model: PreTrainedModel, dataset: datasets.Dataset, collator: Collator, batch_size: int = 128,
            device: torch.device | str | None = None, bf16: bool = True, progress: str | None = None) -> np.ndarray:
    """Logits (float32, [n, num_labels]) for a tokenised dataset, batched by length to minimise padding; the
    forward passes run under `precision.autocast(device, bf16)` (bf16 on CUDA unless `bf16` is false).
    `progress`: the label of a tqdm bar over the batches (none when not given)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = np.array([len(x) for x in dataset["input_ids"]])
    order = np.argsort(-lengths, kind="stable")
    read = batch_reader(dataset, collator)
    chunks = []
    for start in tqdm(range(0, len(order), batch_size), desc=progress, disable=progress is None, unit="batch"):
        batch = read(order[start:start + batch_size].tolist())
        inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in ("labels", "idx")}
        with autocast(device, bf16):
            chunks.append(model(**inputs).logits.float())
    model.train(was_training)
    logits = torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, model.config.num_labels), np.float32)
    out = np.empty_like(logits)
    out[order] = logits
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def project_probabilities(probs: np.ndarray, model_labels: Sequence[str], task: TaskSpec) -> tuple[np.ndarray, list[str]]:
    """Sum the model's class probabilities into the evaluation set's label space.

    A model label maps to the set label of the same name, or through `task.prediction_map` (HANS: neutral and
    contradiction -> non-entailment). Unmapped model labels (e.g. NOT ENOUGH INFO on FEVER-Symmetric) form an
    extra column OTHER that is never the gold label.
    """
    set_labels = list(task.label_names)
    lower = {n.lower(): i for i, n in enumerate(set_labels)}
    columns = np.zeros((len(model_labels), len(set_labels) + 1))
    for i, name in enumerate(model_labels):
        target = task.prediction_map.get(name, name).lower()
        columns[i, lower.get(target, len(set_labels))] = 1.0
    projected = probs @ columns
    if not projected[:, -1].any():
        return projected[:, :-1], set_labels
    return projected, set_labels + [OTHER]


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean()) if len(gold) else float("nan")


def weighted_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 per gold class, averaged with weights proportional to class support (sklearn's average='weighted')."""
    classes, support = np.unique(gold, return_counts=True)
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.dot(scores, support) / support.sum()) if len(gold) else float("nan")


def ece(probs: np.ndarray, gold: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error (Guo et al. 2017): sum over equal-width confidence bins of
    |accuracy - mean confidence| weighted by the bin's share of examples."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == gold
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting one half."""
    from scipy.stats import rankdata

    if len(scores_pos) == 0 or len(scores_neg) == 0:
        raise SubnetsError("AUROC needs at least one positive and one negative example.")
    ranks = rankdata(np.concatenate([scores_pos, scores_neg]))
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predicted_labels(task: TaskSpec, logits: np.ndarray, model_labels: Sequence[str]) -> np.ndarray:
    """Per example, the predicted label id in the evaluation set's label space (as `compute_metrics` scores it;
    a model label with no counterpart in the set is the id after the set's labels)."""
    probs, _ = project_probabilities(softmax(logits.astype(np.float64)), model_labels, task)
    return probs.argmax(axis=1)


def compute_metrics(task: TaskSpec, logits: np.ndarray, gold: np.ndarray, model_labels: Sequence[str],
                    breakdown: Sequence[str] | None = None, prefix: str = "eval_") -> dict[str, float]:
    """HF-style metrics of logits from a model with `model_labels` on an evaluation set of `task`."""
    probs, labels = project_probabilities(softmax(logits.astype(np.float64)), model_labels, task)
    pred = probs.argmax(axis=1)
    metrics = {f"{prefix}accuracy": accuracy(pred, gold), f"{prefix}ece": ece(probs, gold),
               f"{prefix}samples": float(len(gold))}
    if task.metric == "f1":
        metrics[f"{prefix}f1"] = weighted_f1(pred, gold)
    if list(model_labels) == list(task.label_names):
        picked = np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, None))
        metrics[f"{prefix}loss"] = float(-picked.mean()) if len(gold) else float("nan")
    if breakdown is not None:  # per gold label (HANS: non-entailment), then per group x gold label
        groups = np.asarray(breakdown)
        by_label = [(label, gold == li) for li, label in enumerate(task.label_names)]
        selections = by_label + [(f"{group}_{label}", (groups == group) & is_label)
                                 for group in sorted(set(groups)) for label, is_label in by_label]
        for name, sel in selections:
            if sel.any():
                metrics[f"{prefix}accuracy_{name}"] = accuracy(pred[sel], gold[sel])
    return metrics


def check_label_compatibility(model_labels: Sequence[str], task: TaskSpec, model_task: TaskSpec, where: str) -> None:
    """Fail clearly when a checkpoint's labels are not those of the task an evaluation set is meant for."""
    if [n.lower() for n in model_labels] != [n.lower() for n in model_task.label_names]:
        raise SubnetsError(f"Checkpoint {where} predicts labels {list(model_labels)}, but set '{task.name}' expects a "
                           f"'{model_task.name}' model with labels {list(model_task.label_names)}.")
