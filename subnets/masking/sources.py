"""Where masks and initialisations come from: stage run directories, the mask store, mask files.

A stage run directory records its options in `run_config.json`; following `model_name_or_path` back from a
stage-2 run gives the stage-1 run (fine-tuned weights, `checkpoint-step-<k>` snapshots) and from there the
pre-trained model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from masks import describe_model

from ..errors import SubnetsError

RUN_MASKS_FILE = "masks.json"  # in a stage-2 run directory: {"state": id-or-file, "ticket": id-or-file}


def run_config(path: str | os.PathLike) -> dict | None:
    """The `run_config.json` of a stage run directory, or None for anything else (a model name or path)."""
    config = Path(path) / "run_config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise SubnetsError(f"{config} is not valid JSON; expected the config a stage wrote.") from e


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


def finetuned_run(source: str) -> str | None:
    """The stage-1 run directory behind `source` (a stage-1 or stage-2 run directory), if any."""
    return next((path for path, config in run_chain(source) if config.get("stage") == "stage1_finetune"), None)


def pretrained_source(source: str) -> str:
    """The pre-trained model behind a chain of run directories (or `source` itself)."""
    chain = run_chain(source)
    return chain[-1][1]["ModelArguments"]["model_name_or_path"] if chain else source


def init_path(source: str, init: str) -> tuple[str, bool]:
    """(path to load, fresh classifier?) for stage 3's `--init pretrained|finetuned|<step>`."""
    if init == "pretrained":
        return pretrained_source(source), True
    run = finetuned_run(source)
    if init == "finetuned":
        if run is None:
            return source, False  # a plain fine-tuned model directory or name
        return str(Path(run) / "checkpoint-best"), False
    if not init.isdigit():
        raise SubnetsError(f"--init '{init}' is not valid; expected pretrained, finetuned or a step number.")
    if run is None:
        raise SubnetsError(f"--init {init} needs a stage-1 run directory as the source; got '{source}'.")
    step_dir = Path(run) / f"checkpoint-step-{init}"
    if not step_dir.is_dir():
        raise SubnetsError(f"{step_dir} does not exist; expected stage 1 to have run with --save_model_at_steps {init}.")
    return str(step_dir), False


def load_mask(spec: str, store_root: Path, *, prefer: str = "state") -> tuple[dict[str, torch.Tensor], dict]:
    """A mask dict and its metadata from a stage-2 run directory, a mask store id, or a safetensors file.

    For a run directory, `prefer` picks the real-valued state (to draw any sparsity) or the evaluated ticket.
    """
    path = Path(spec)
    if path.is_dir():
        listing = path / RUN_MASKS_FILE
        if not listing.is_file():
            raise SubnetsError(f"{path} has no {RUN_MASKS_FILE}; expected a stage-2 run directory.")
        try:
            entries = json.loads(listing.read_text())
            chosen, store = entries.get(prefer) or entries["ticket"], Path(entries.get("store", store_root))
            if not isinstance(chosen, str):
                raise TypeError(chosen)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SubnetsError(f"{listing} is damaged ({e.__class__.__name__}); expected the masks.json a stage-2 run "
                               f"writes: {{\"ticket\": id, \"state\": id, \"store\": folder}}.") from e
        mask, meta = load_mask(chosen, store)
        return mask, {**meta, "source_run": str(path)}
    if path.is_file():
        try:
            return load_file(path), {"file": str(path)}
        except Exception as e:  # safetensors raises its own error types
            raise SubnetsError(f"{path} is not a safetensors mask file ({e.__class__.__name__}).") from e
    from masks import MaskStore

    record = MaskStore(store_root).get(spec)
    return record.masks, dict(record.meta, id=record.id)


def record_meta(model: torch.nn.Module, task_name: str, method: str, *, model_name: str, parent: str, seed: int,
                **fields: Any) -> dict[str, Any]:
    """Mask-store metadata shared by every stage: method, task, seed, parent (the model or mask record it came
    from), and the model's name, fingerprint, parameter names and shapes. A model or parent that is a folder or
    file is recorded as its absolute path, whatever folder the stage ran from."""
    return {"task": task_name, "method": method, "seed": seed, "parent": _resolved(parent),
            **describe_model(model, _resolved(model_name)), **fields}


def _resolved(name: str) -> str:
    """An existing file or folder as its absolute path; anything else (a hub name, a record id) as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if name and path.exists() else name
