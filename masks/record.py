"""Record metadata: validation of user fields, computed fields, content hashes, model fingerprints."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch

from subnets.errors import SubnetsError
from subnets.targets import canonical_parameter_name

KINDS = ("ticket", "state", "update")
"""ticket: a binary mask; state: real-valued gate or score state; update: per-step update masks of one run."""

# Fields the store computes; a user's meta may not set them.
COMPUTED_FIELDS = ("created", "tensors", "sparsity", "files", "format", "update_counts", "steps_logged", "complete")
_STRING_FIELDS = ("method", "model", "model_fingerprint", "task", "parent")
_INT_FIELDS = ("seed", "step")
FORMAT_VERSION = 1


@dataclass
class MaskRecord:
    """One stored record: its id, its metadata (`meta`, the content of record.json) and its masks.

    `masks` is read from disk on first access (listing a store does not load any tensors). For an update-mask
    record, `masks` is the per-element update frequency (fraction of logged steps with a non-zero mask) and
    `steps()` yields every logged (step, masks) pair.
    """

    id: str
    meta: dict[str, Any]
    _load_masks: Callable[[], dict[str, torch.Tensor]] = field(repr=False)
    _load_steps: Callable[[], Iterator[tuple[int, dict[str, torch.Tensor]]]] | None = field(default=None, repr=False)
    _masks: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        if self._masks is None:
            self._masks = self._load_masks()
        return self._masks

    @property
    def global_sparsity(self) -> float | None:
        sparsity = self.meta.get("sparsity")
        return None if sparsity is None else sparsity["global"]

    def steps(self) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        if self._load_steps is None:
            raise SubnetsError(f"Record {self.id[:12]} is a {self.kind} record; only update-mask records have steps.")
        return self._load_steps()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_id(meta: Mapping[str, Any], file_hashes: Mapping[str, str]) -> str:
    """The record id: sha256 over the metadata (creation time excluded) and the checksums of its data files."""
    hashed = {k: v for k, v in meta.items() if k not in ("created", "files", "complete")}
    return sha256_hex(canonical_json({"meta": hashed, "files": dict(sorted(file_hashes.items()))}))


def validate_user_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the fields a caller may set; unknown extra fields are kept as given (they must be JSON-serialisable)."""
    meta = dict(meta or {})
    for key in COMPUTED_FIELDS:
        if key in meta:
            raise SubnetsError(f"Record metadata field '{key}' is computed by the store; remove it from meta.")
    if "kind" in meta and meta["kind"] not in KINDS:
        raise SubnetsError(f"Record kind '{meta['kind']}' is unknown; expected one of {', '.join(KINDS)}.")
    for key in _STRING_FIELDS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise SubnetsError(f"Record metadata field '{key}' must be a string, got {type(meta[key]).__name__}.")
    for key in _INT_FIELDS:
        if meta.get(key) is not None and (isinstance(meta[key], bool) or not isinstance(meta[key], int)):
            raise SubnetsError(f"Record metadata field '{key}' must be an integer, got {meta[key]!r}.")
    target = meta.get("target_sparsity")
    if target is not None and not (isinstance(target, (int, float)) and 0.0 <= target <= 1.0):
        raise SubnetsError(f"Record metadata field 'target_sparsity' must be a number in [0, 1], got {target!r}.")
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SubnetsError(f"Record metadata must be JSON-serialisable ({e}).") from e
    return meta


def tensor_layout(masks: Mapping[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Parameter name -> {"shape", "dtype"} of each mask entry."""
    return {
        name: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for name, t in masks.items()
    }


def infer_kind(masks: Mapping[str, torch.Tensor], requested: str | None) -> str:
    binary = all(t.dtype == torch.bool for t in masks.values())
    kind = requested or ("ticket" if binary else "state")
    if kind == "ticket" and not binary:
        first = next(n for n, t in masks.items() if t.dtype != torch.bool)
        raise SubnetsError(f"A ticket must be binary, but entry '{first}' has dtype {masks[first].dtype}; use kind 'state'.")
    if kind == "update":
        raise SubnetsError("Update-mask records are written with MaskStore.open_update_log(meta), not put().")
    return kind


def model_fingerprint(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor], samples: int = 1024) -> str:
    """A cheap deterministic fingerprint of weights: names, shapes, dtypes and `samples` evenly spaced values each.

    Two models with the same architecture but different weights (pre-trained vs fine-tuned) differ in it; the
    cost is independent of the model size beyond the number of tensors.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{canonical_parameter_name(name)}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        flat = tensor.reshape(-1)
        if flat.numel():
            index = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), device=flat.device).long()
            digest.update(flat[index].to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()[:16]


def describe_model(model: torch.nn.Module, name: str | None = None) -> dict[str, Any]:
    """Metadata fields for the model a mask belongs to: name, fingerprint, parameter names and shapes."""
    name = name or getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    shapes = {canonical_parameter_name(n): list(p.shape) for n, p in model.state_dict().items()}
    return {"model": str(name), "model_fingerprint": model_fingerprint(model), "parameter_shapes": shapes}

