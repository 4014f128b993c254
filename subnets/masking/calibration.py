"""Calibration for one-shot pruning: the texts (a seeded sample of the training split or a user's file), optional
FreeLB perturbation of their embeddings, and the input statistics of linear layers collected by forward hooks.

Statistics count real tokens only (padding excluded): for each target linear, the sum over tokens of x_j^2 (Wanda's
squared input norms) and, when asked, X^T X (SparseGPT's Hessian up to a factor).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedTokenizerBase
import numpy as np
import torch

from ..data import USER_FORMATS, Collator, read_user_file
from ..errors import SubnetsError
from ..objectives import PerturbationConfig, cross_entropy
from ..objectives.modules import input_embeddings, token_mask
from ..objectives.perturbers import ascent_step, initial_delta, project
from ..tasks import TaskSpec
from ..training import model_inputs

Batch = dict[str, torch.Tensor]
CALIBRATION_BATCH = 32  # examples per calibration forward pass (statistics are sums: the size changes nothing)
ATTACK_COLUMN = "perturbed"  # an attack JSONL's adversarial text(s) (subnets.attacks: AttackResult.perturbed)


def sample_calibration(train: datasets.Dataset, samples: int, seed: int) -> datasets.Dataset:
    """`samples` distinct training examples drawn with `seed` (all of them if the split is smaller)."""
    if samples <= 0:
        raise SubnetsError(f"--calibration_samples is {samples}; expected a positive number of examples.")
    if samples >= len(train):
        return train
    return train.select(np.sort(np.random.default_rng(seed).permutation(len(train))[:samples]))


def read_calibration_file(path: str | Path, task: TaskSpec, tokenizer: PreTrainedTokenizerBase,
                          max_length: int) -> datasets.Dataset:
    """Tokenised texts of a user's file: a .txt file (one text per line), or a CSV/TSV/JSONL with an attack's
    `perturbed` column (a list of one or two texts), else the task's text columns; its `label` column, if any,
    gives labels (ids or the task's label names)."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise SubnetsError(f"--calibration_file {path} is not a file; expected a .txt, CSV, TSV or JSONL of texts.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [{"text": line} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        columns: Sequence[str] = ("text",)
    elif suffix in USER_FORMATS:
        rows = read_user_file(path, USER_FORMATS[suffix])
        columns = (ATTACK_COLUMN,) if rows and ATTACK_COLUMN in rows[0] else task.text_fields
    else:
        raise SubnetsError(f"--calibration_file {path} has suffix '{path.suffix}'; expected .txt or one of "
                           f"{', '.join(USER_FORMATS)}.")
    if not rows:
        raise SubnetsError(f"--calibration_file {path} holds no texts; expected at least one.")
    texts, labels = [], []
    for number, row in enumerate(rows, 1):
        missing = [c for c in columns if c not in row]
        if missing:
            raise SubnetsError(f"--calibration_file {path} row {number} lacks column(s) {', '.join(missing)}; "
                               f"expected '{ATTACK_COLUMN}' or the task's text columns {', '.join(task.text_fields)}.")
        fields = row[ATTACK_COLUMN] if columns == (ATTACK_COLUMN,) else [row[c] for c in columns]
        fields = [fields] if isinstance(fields, str) else fields  # a CSV's perturbed column holds one text
        texts.append(tuple(str(f) for f in fields))
        labels.append(_label(row.get("label"), task, path, number))
    if len({len(t) for t in texts}) != 1:
        raise SubnetsError(f"--calibration_file {path} mixes single texts and pairs; expected one or the other.")
    encoded = tokenizer(*map(list, zip(*texts)), truncation=True, max_length=max_length)
    data = dict(encoded)
    if all(label is not None for label in labels):
        data["labels"] = labels
    return datasets.Dataset.from_dict(data)


def _label(value: object, task: TaskSpec, path: Path, number: int) -> int | None:
    if value is None or value == "":
        return None
    raw = str(value).strip()
    if raw in task.label_names:
        return list(task.label_names).index(raw)
    if raw.lstrip("-").isdigit() and 0 <= int(raw) < len(task.label_names):
        return int(raw)
    raise SubnetsError(f"--calibration_file {path} row {number} has label '{raw}'; expected an id or one of "
                       f"{', '.join(task.label_names)}.")


def calibration_batches(data: datasets.Dataset, tokenizer: PreTrainedTokenizerBase,
                        device: torch.device) -> list[Batch]:
    """The calibration examples as padded batches on `device` (model inputs, plus labels where known)."""
    collate = Collator(tokenizer)
    keep = [c for c in data.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "labels")]
    rows = data.select_columns(keep).to_list()
    return [{k: v.to(device) for k, v in collate(rows[i:i + CALIBRATION_BATCH]).items()}
            for i in range(0, len(rows), CALIBRATION_BATCH)]


def freelb_perturb(model: torch.nn.Module, batches: Sequence[Batch], cfg: PerturbationConfig,
                   seed: int) -> list[Batch]:
    """The batches with `inputs_embeds` = word embeddings + a FreeLB perturbation (Zhu et al. 2020): the random
    start, then `cfg.steps` ascent steps on the cross-entropy of `model`; seeded by `seed`."""
    if any("labels" not in b for b in batches):
        raise SubnetsError("--calibration_perturb freelb needs labelled calibration texts; expected a 'label' column "
                           "in --calibration_file (or the training split).")
    words = input_embeddings(model)
    out = []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for batch in batches:
            inputs = model_inputs(batch)
            input_ids = inputs.pop("input_ids")
            embeds = words(input_ids).detach()
            mask = token_mask(inputs, embeds).float()
            delta = project(initial_delta(embeds, mask, cfg), cfg)
            for _ in range(cfg.steps):
                delta.requires_grad_()
                loss = cross_entropy(model(inputs_embeds=embeds + delta, **inputs).logits, batch)
                (grad,) = torch.autograd.grad(loss, delta)
                delta = ascent_step(delta.detach(), grad, mask, cfg)
            out.append({**inputs, "inputs_embeds": (embeds + delta).detach(), "labels": batch["labels"]})
    model.train(was_training)
    return out


@dataclass
class InputStatistics:
    """Per target linear: sum over calibration tokens of x_j^2, optionally X^T X, and the token count."""

    squares: torch.Tensor
    hessian: torch.Tensor | None
    tokens: int = 0

    @property
    def norms(self) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens (Wanda's input norms)."""
        return self.squares.sqrt()


class _StopForward(Exception):
    """Raised by a hook once the modules of interest have run: the rest of the forward pass is not needed."""


@contextlib.contextmanager
def _recording(modules: Mapping[str, torch.nn.Linear], stats: dict[str, InputStatistics], hessian: bool,
               tokens: list[torch.Tensor | None]) -> Iterator[None]:
    def hook(name: str):
        def record(module: torch.nn.Module, args: tuple) -> None:
            x = args[0].detach()
            keep = tokens[0]
            if keep is not None and x.dim() == 3 and x.shape[:2] == keep.shape:
                x = x[keep]
            x = x.reshape(-1, x.shape[-1]).double()
            entry = stats.setdefault(name, InputStatistics(torch.zeros(x.shape[-1], dtype=torch.float64,
                                                                       device=x.device),
                                                           torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64,
                                                                       device=x.device) if hessian else None))
            entry.squares += (x * x).sum(0)
            if entry.hessian is not None:
                entry.hessian += x.T @ x
            entry.tokens += x.shape[0]
        return record

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def input_statistics(model: torch.nn.Module, batches: Sequence[Batch], modules: Mapping[str, torch.nn.Linear], *,
                     hessian: bool = False, stop_after: torch.nn.Module | None = None) -> dict[str, InputStatistics]:
    """Run the calibration batches through `model` (in eval mode) and return the input statistics of `modules`
    (by name); with `stop_after`, each forward pass ends once that module has run."""
    stats: dict[str, InputStatistics] = {}
    tokens: list[torch.Tensor | None] = [None]

    def stop(module: torch.nn.Module, args: tuple, output: object) -> None:
        raise _StopForward

    was_training = model.training
    model.eval()
    handle = stop_after.register_forward_hook(stop) if stop_after is not None else None
    try:
        with _recording(modules, stats, hessian, tokens):
            for batch in batches:
                mask = batch.get("attention_mask")
                tokens[0] = mask.bool() if mask is not None else None
                try:
                    model(**model_inputs(batch))
                except _StopForward:
                    pass
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    missing = [name for name in modules if name not in stats]
    if missing:
        raise SubnetsError(f"The calibration pass never reached {missing[0]}; expected every target linear to run.")
    return stats
