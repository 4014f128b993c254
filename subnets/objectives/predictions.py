"""Cached per-example predictions that the debiasing losses of SRNets (Liu et al. 2022, Sec. 3.3; `debiasing/`)
are joined to: bias-only predictions (`--bias_predictions`) and a teacher's (`--teacher_predictions`, conf_reg).

Predictions live in a safetensors file with tensors `idx` (example ids, int64), `probs` ([N, classes],
float32) and `labels` (int64), and metadata `task`, `num_classes`, `fingerprint` (of the dataset the
predictions were made for) and `kind` ("bias" or "teacher"). They are joined to a batch by `batch["idx"]`
with a sorted-id search on the device; `check_alignment` is run once at build time so that the per-step
look-up can never silently pick a wrong row.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from ..errors import SubnetsError
from ..io import atomic_write_bytes
from ..tasks import TaskSpec
from .context import DebiasContext

KINDS = ("bias", "teacher")


def dataset_fingerprint(ids: np.ndarray, labels: np.ndarray) -> str:
    """A short content hash of (example id, label) pairs, independent of row order and tokenisation."""
    order = np.argsort(ids, kind="stable")
    digest = hashlib.sha256(np.asarray(ids, dtype=np.int64)[order].tobytes())
    digest.update(np.asarray(labels, dtype=np.int64)[order].tobytes())
    return digest.hexdigest()[:16]


def dataset_ids_and_labels(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The `idx` and label (`labels` or `label`) columns of a `datasets.Dataset` as int64 arrays."""
    label_column = "labels" if "labels" in dataset.column_names else "label"
    missing = {"idx", label_column} - set(dataset.column_names)
    if missing:
        raise SubnetsError(f"The training dataset lacks the column(s) {sorted(missing)}; debiasing joins cached "
                           "predictions by 'idx' and checks them against the labels.")
    return (np.asarray(dataset["idx"], dtype=np.int64), np.asarray(dataset[label_column], dtype=np.int64))


@dataclass
class PredictionCache:
    """Per-example class probabilities keyed by example id (rows sorted by id)."""

    ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    task: str
    fingerprint: str
    kind: str = "bias"

    def __post_init__(self) -> None:
        order = np.argsort(self.ids, kind="stable")
        self.ids = np.asarray(self.ids, dtype=np.int64)[order]
        self.probs = np.asarray(self.probs, dtype=np.float32)[order]
        self.labels = np.asarray(self.labels, dtype=np.int64)[order]
        if self.probs.ndim != 2 or len(self.probs) != len(self.ids) or len(self.labels) != len(self.ids):
            raise SubnetsError("Cached predictions need one probability row and one label per example id.")
        if np.any(self.ids[1:] == self.ids[:-1]):
            raise SubnetsError(f"Cached {self.kind} predictions for '{self.task}' repeat example ids; "
                               "expected unique ids.")
        if self.kind not in KINDS:
            raise SubnetsError(f"Unknown prediction kind '{self.kind}'; expected one of {', '.join(KINDS)}.")

    @property
    def num_classes(self) -> int:
        return self.probs.shape[1]

    def save(self, path: str | os.PathLike) -> None:
        metadata = {"task": self.task, "num_classes": str(self.num_classes), "fingerprint": self.fingerprint,
                    "kind": self.kind}
        tensors = {"idx": self.ids, "probs": self.probs, "labels": self.labels}
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PredictionCache":
        path = Path(path)
        if not path.is_file():
            raise SubnetsError(f"Prediction file '{path}' does not exist; create it with "
                               "subnets-bias-model.")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SubnetsError(f"Prediction file '{path}' is not a readable safetensors file ({e}).") from e
        missing = ({"idx", "probs", "labels"} - set(tensors)) | ({"task", "fingerprint", "kind"} - set(meta))
        if missing:
            raise SubnetsError(f"Prediction file '{path}' lacks {sorted(missing)}; expected a file written by "
                               "subnets-bias-model.")
        return cls(tensors["idx"], tensors["probs"], tensors["labels"], meta["task"], meta["fingerprint"], meta["kind"])

    def check_alignment(self, dataset, task_name: str, num_classes: int, source: str = "predictions") -> None:
        """Raise SubnetsError unless every example of `dataset` has a row here, with the same label, for the
        same task and number of classes. The dataset may be a subset of the one the cache was made for."""
        if self.task != task_name:
            raise SubnetsError(f"{source} were made for task '{self.task}', but the run trains on '{task_name}'.")
        if self.num_classes != num_classes:
            raise SubnetsError(f"{source} have {self.num_classes} classes per example, but task '{task_name}' has "
                               f"{num_classes}.")
        ids, labels = dataset_ids_and_labels(dataset)
        pos = np.searchsorted(self.ids, ids).clip(max=len(self.ids) - 1)
        absent = self.ids[pos] != ids
        if absent.any():
            raise SubnetsError(f"{source} (dataset fingerprint {self.fingerprint}) have no row for {int(absent.sum())} "
                               f"of {len(ids)} training examples (first missing id {int(ids[absent][0])}); recreate "
                               "them for this training split.")
        wrong = self.labels[pos] != labels
        if wrong.any():
            raise SubnetsError(f"{source} disagree with the training labels for {int(wrong.sum())} examples (first id "
                               f"{int(ids[wrong][0])}); they were made for a different version of the dataset.")


class DeviceLookup:
    """`lookup(idx) -> probs[batch, classes]` on the batch's device: one searchsorted + gather, no host sync."""

    def __init__(self, cache: PredictionCache) -> None:
        self.cache = cache
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.device not in self._tables:
            self._tables[idx.device] = (torch.from_numpy(self.cache.ids).to(idx.device),
                                        torch.from_numpy(self.cache.probs).to(idx.device))
        ids, probs = self._tables[idx.device]
        return probs[torch.searchsorted(ids, idx.to(torch.int64))]


class JoinedLoss:
    """A per-batch loss (`LossFn`) `fn(logits, labels, *probs)` whose `probs` are the cached predictions of the
    batch's examples, one tensor per cache, looked up by `batch["idx"]`."""

    def __init__(self, fn: Callable[..., torch.Tensor], *caches: PredictionCache) -> None:
        self.fn = fn
        self.lookups = [DeviceLookup(cache) for cache in caches]

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if "idx" not in batch:
            raise SubnetsError("Debiasing losses need example ids: the training batch has no 'idx' entry.")
        return self.fn(logits, batch["labels"], *(lookup(batch["idx"]) for lookup in self.lookups))


@dataclass
class BiasPredictionArguments:
    config_group = "ObjectiveArguments"
    _argument_group_name = "debiasing: bias model (poe, ...)"  # its --help section

    bias_predictions: str | None = field(default=None, metadata={
        "help": "Bias-only predictions for the training split (bias_predictions.safetensors from "
                "subnets-bias-model)."})


def load_predictions(path: str | None, option: str, kind: str, task: TaskSpec, train_dataset: Any
                     ) -> PredictionCache:
    """The `kind` predictions of `--option`, checked against the training split once."""
    if not path:
        raise SubnetsError(f"This --debias choice needs --{option} (a predictions file for the training split).")
    cache = PredictionCache.load(path)
    if cache.kind != kind:
        raise SubnetsError(f"--{option} {path} holds {cache.kind} predictions; expected {kind} predictions.")
    cache.check_alignment(train_dataset, task.name, len(task.label_names), source=f"Predictions in {path}")
    return cache


def bias_predictions(context: DebiasContext) -> PredictionCache:
    """The bias-only predictions every debiasing loss reads (`--bias_predictions`)."""
    return load_predictions(context.options[BiasPredictionArguments].bias_predictions, "bias_predictions", "bias",
                            context.task, context.train_dataset)
