"""Sparse-aware checkpoints: the kept values of masked tensors, the bit-packed mask, the dense rest.

Directory layout: `sparse_model.safetensors` (masked tensor `name` -> 1-D kept values in mask order; every other
tensor dense), `mask.safetensors` (the mask, bit-packed as in the store) unless the checkpoint references a store
record instead, plus the model's `config.json` and tokenizer files so that `export_dense` needs nothing else.
Size: kept values x bytes + 1 bit per masked weight + the unmasked tensors + small headers.
The mask, not `value != 0`, decides what is kept: a kept weight that is exactly zero stays kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from subnets.errors import SubnetsError
from subnets.io import atomic_dir
from subnets.sparsity import count_nonzero
from subnets.weights import check_shapes, plain_state_dict, save_plain_model

from .bits import decode_masks, encode_masks
from .store import MaskStore

SPARSE_FILE = "sparse_model.safetensors"
MASK_FILE = "mask.safetensors"
MASKED_KEY = "sparse.masked"
MASK_REF_KEY = "sparse.mask_ref"


def save_sparse_checkpoint(
    model: torch.nn.Module,
    masks: Mapping[str, torch.Tensor],
    directory: str | os.PathLike,
    *,
    tokenizer: Any = None,
    mask_id: str | None = None,
) -> Path:
    """Save a masked model (pruned weights exactly zero) in sparse form; with `mask_id`, reference the store.

    Raises if a weight the mask prunes is not zero, since the round trip could not restore it.
    """
    state = {name: value.to("cpu") for name, value in plain_state_dict(model).items()}
    check_shapes(model, masks)
    tensors: dict[str, torch.Tensor] = {}
    masked: dict[str, dict[str, Any]] = {}
    for name, value in state.items():
        mask = masks.get(name)
        if mask is None:
            tensors[name] = value.contiguous()
            continue
        if mask.dtype != torch.bool:
            raise SubnetsError(f"Mask entry '{name}' has dtype {mask.dtype}; a sparse checkpoint needs a binary mask.")
        mask = mask.to("cpu")
        if count_nonzero(value[~mask]):
            raise SubnetsError(
                f"Weights of '{name}' that the mask prunes are not zero; apply the mask first (masks.apply_masks)."
            )
        tensors[name] = value[mask].contiguous()
        masked[name] = {"shape": list(value.shape)}
    missing = sorted(set(masks) - set(masked))
    if missing:
        raise SubnetsError(f"Mask entry '{missing[0]}' is not a tensor of the model's state dict.")
    metadata = {MASKED_KEY: json.dumps(masked, separators=(",", ":")), MASK_REF_KEY: mask_id or ""}
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / SPARSE_FILE), metadata=metadata)
        if mask_id is None:
            (tmp / MASK_FILE).write_bytes(encode_masks({name: masks[name] for name in masked}))
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "save_pretrained"):
            config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(directory)


def checkpoint_mask(directory: str | os.PathLike, *, store: MaskStore | None = None) -> dict[str, torch.Tensor]:
    """The binary mask of a sparse checkpoint, from its own file or from the store record it references."""
    directory = Path(directory)
    reference = _read_metadata(directory)[MASK_REF_KEY]
    if not reference:
        return decode_masks((directory / MASK_FILE).read_bytes())
    if store is None:
        raise SubnetsError(f"{directory} references mask record {reference[:12]}; pass the mask store to load it.")
    return store.get(reference).masks


def load_sparse_state_dict(directory: str | os.PathLike, *, store: MaskStore | None = None) -> dict[str, torch.Tensor]:
    """The dense state dict of a sparse checkpoint (pruned weights exactly zero)."""
    directory = Path(directory)
    masked = json.loads(_read_metadata(directory)[MASKED_KEY])
    masks = checkpoint_mask(directory, store=store)
    state = load_file(str(directory / SPARSE_FILE))
    for name, info in masked.items():
        shape = tuple(info["shape"])
        mask = masks.get(name)
        if mask is None or tuple(mask.shape) != shape:
            found = None if mask is None else tuple(mask.shape)
            raise SubnetsError(f"The mask of {directory} does not fit tensor '{name}' (mask shape {found}, expected {shape}).")
        kept = state[name]
        if kept.numel() != count_nonzero(mask):
            raise SubnetsError(f"Tensor '{name}' in {directory} has {kept.numel()} kept values but its mask keeps {count_nonzero(mask)}.")
        dense = torch.zeros(shape, dtype=kept.dtype)
        dense[mask] = kept
        state[name] = dense
    return state


def load_sparse_model(directory: str | os.PathLike, *, store: MaskStore | None = None) -> torch.nn.Module:
    """A `transformers` sequence classifier built from the checkpoint's config.json with its weights loaded."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise SubnetsError(f"{directory} has no config.json; it was saved from a model without a transformers config.")
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)  # never code from a model folder
    except (OSError, ValueError) as e:
        raise SubnetsError(f"Could not read the config of {directory} ({str(e).strip()[:200]}); expected the config "
                           f"of a transformers architecture (code shipped with a model is never run).") from e
    model = AutoModelForSequenceClassification.from_config(config)
    model.load_state_dict(load_sparse_state_dict(directory, store=store), strict=True)
    return model.eval()


def export_dense(
    directory: str | os.PathLike, out_dir: str | os.PathLike, *, store: MaskStore | None = None
) -> Path:
    """Write an ordinary `from_pretrained` directory (exact zeros at pruned weights) from a sparse checkpoint."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    model = load_sparse_model(directory, store=store)
    has_tokenizer = (directory / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False) if has_tokenizer else None
    save_plain_model(model, tokenizer, out_dir)
    return Path(out_dir)


def size_bound(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], slack: float = 1.05) -> int:
    """The promised size: slack x (kept values x bytes + 1 bit per masked weight) + the unmasked tensors."""
    masked_bytes = unmasked_bytes = 0.0
    for name, value in state.items():
        if name in masks:
            masked_bytes += count_nonzero(masks[name]) * value.element_size() + masks[name].numel() / 8
        else:
            unmasked_bytes += value.numel() * value.element_size()
    return int(slack * masked_bytes + unmasked_bytes)


def checkpoint_bytes(directory: str | os.PathLike) -> int:
    """Bytes of the weight and mask files of a sparse checkpoint (config and tokenizer files excluded)."""
    directory = Path(directory)
    return sum((directory / name).stat().st_size for name in (SPARSE_FILE, MASK_FILE) if (directory / name).exists())


def _read_metadata(directory: Path) -> dict[str, str]:
    path = directory / SPARSE_FILE
    if not path.exists():
        raise SubnetsError(f"{directory} is not a sparse checkpoint: {SPARSE_FILE} is missing.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except SafetensorError as e:
        raise SubnetsError(f"{path} is damaged and cannot be read ({e}).") from e
    if MASKED_KEY not in metadata:
        raise SubnetsError(f"{path} has no '{MASKED_KEY}' metadata; expected a file written by save_sparse_checkpoint.")
    return metadata
