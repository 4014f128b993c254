"""Debiasing losses of SRNets (Liu et al. 2022, Sec. 3.3) on cached per-example bias-only predictions.

Predictions live in a safetensors file with tensors `idx` (example ids, int64), `probs` ([N, classes],
float32) and `labels` (int64), and metadata `task`, `num_classes`, `fingerprint` (of the dataset the
predictions were made for) and `kind` ("bias" or "teacher"). They are joined to a batch by `batch["idx"]`
with a sorted-id search on the device; `check_alignment` is run once at build time so that the per-step
look-up can never silently pick a wrong row.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from ..errors import SubnetsError
from ..io import atomic_write_bytes

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
                               "pipelines/train_bias_model.py.")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SubnetsError(f"Prediction file '{path}' is not a readable safetensors file ({e}).") from e
        missing = ({"idx", "probs", "labels"} - set(tensors)) | ({"task", "fingerprint", "kind"} - set(meta))
        if missing:
            raise SubnetsError(f"Prediction file '{path}' lacks {sorted(missing)}; expected a file written by "
                               "pipelines/train_bias_model.py.")
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


def _bias_probs(lookup: DeviceLookup, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "idx" not in batch:
        raise SubnetsError("Debiasing losses need example ids: the training batch has no 'idx' entry.")
    return lookup(batch["idx"])


def poe_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """Product of experts (Clark et al. 2019; He et al. 2019): CE(log_softmax(f(x)) + log p_b(x), y)."""
    combined = F.log_softmax(logits.float(), dim=-1) + bias_probs.clamp_min(1e-12).log()
    return F.cross_entropy(combined, labels)


def reweight_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor) -> torch.Tensor:
    """Example reweighting (Schuster et al. 2019): sum_i w_i CE_i / sum_i w_i with w_i = 1 - p_b(x_i)[y_i]."""
    weights = 1 - bias_probs.gather(1, labels[:, None]).squeeze(1)
    per_example = F.cross_entropy(logits.float(), labels, reduction="none")
    return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)


def conf_reg_loss(logits: torch.Tensor, labels: torch.Tensor, bias_probs: torch.Tensor,
                  teacher_probs: torch.Tensor) -> torch.Tensor:
    """Confidence regularisation (Utama et al. 2020, Eq. 2-3): distil from the teacher's probabilities scaled
    as p_t^(1 - p_b[y]) and renormalised, so examples the bias model gets right get a softer target."""
    exponent = 1 - bias_probs.gather(1, labels[:, None])
    scaled = teacher_probs.clamp_min(1e-12) ** exponent
    target = scaled / scaled.sum(dim=-1, keepdim=True)
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


class PoELoss:
    def __init__(self, bias: PredictionCache) -> None:
        self.bias = DeviceLookup(bias)

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return poe_loss(logits, batch["labels"], _bias_probs(self.bias, batch))


class ReweightLoss:
    def __init__(self, bias: PredictionCache) -> None:
        self.bias = DeviceLookup(bias)

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return reweight_loss(logits, batch["labels"], _bias_probs(self.bias, batch))


class ConfRegLoss:
    def __init__(self, bias: PredictionCache, teacher: PredictionCache) -> None:
        self.bias = DeviceLookup(bias)
        self.teacher = DeviceLookup(teacher)

    def __call__(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return conf_reg_loss(logits, batch["labels"], _bias_probs(self.bias, batch), _bias_probs(self.teacher, batch))
