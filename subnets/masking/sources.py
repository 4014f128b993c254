"""Where masks and initialisations come from: stage run directories, the mask store, mask files.

Following a stage-2 run back (`subnets.runs.run_chain`) gives the stage-1 run (fine-tuned weights,
`checkpoint-step-<k>` snapshots) and from there the pre-trained model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from subnets.masks import describe_model

from ..errors import SubnetsError
from ..runs import BEST, RUN_MASKS_FILE, finetuned_run, pretrained_source


def init_path(source: str, init: str) -> tuple[str, bool]:
    """(path to load, fresh classifier?) for stage 3's `--init pretrained|finetuned|<step>`."""
    if init == "pretrained":
        return pretrained_source(source), True
    run = finetuned_run(source)
    if init == "finetuned":
        if run is None:
            return source, False  # a plain fine-tuned model directory or name
        return str(Path(run) / BEST), False
    if not init.isdigit():
        raise SubnetsError(f"--init '{init}' is not valid; expected pretrained, finetuned or a step number.")
    if run is None:
        raise SubnetsError(f"--init {init} needs a stage-1 run directory as the source; got '{source}'.")
    step_dir = Path(run) / f"checkpoint-step-{init}"  # as given: "007" is not step_checkpoint(7)
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
    from subnets.masks import MaskStore

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
