"""Mask tensors <-> safetensors bytes: binary masks bit-packed (numpy.packbits), real-valued states as given.

A file is self-describing: its safetensors header metadata (`masks.layout`) holds each entry's dtype and shape,
so a packed entry (uint8, 1 bit per weight, padded to whole bytes) unpacks to its original bool tensor.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from subnets.errors import SubnetsError

LAYOUT_KEY = "masks.layout"
BOOL = "bool"


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor of any shape as a flat uint8 tensor, 8 weights per byte (big-endian bit order)."""
    flat = mask.detach().to("cpu").reshape(-1).numpy()
    return torch.from_numpy(np.packbits(flat))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack_bits`: the bool tensor of `shape`."""
    count = int(np.prod(shape, dtype=np.int64))
    if packed.numel() != (count + 7) // 8:
        raise SubnetsError(f"A packed mask of {packed.numel()} bytes cannot hold shape {tuple(shape)}; the file is inconsistent.")
    bits = np.unpackbits(packed.numpy(), count=count).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


def overlap_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(|a and b|, |a or b|) of two bool tensors of one shape, by popcount over their packed bits."""
    x, y = pack_bits(a).numpy(), pack_bits(b).numpy()  # padding bits are 0 in both, so they never count
    return int(np.bitwise_count(x & y).sum()), int(np.bitwise_count(x | y).sum())


def check_mask_tensor(name: str, value: object) -> torch.Tensor:
    """A mask entry must be a bool or floating-point tensor; anything else is a user error."""
    if not isinstance(value, torch.Tensor):
        raise SubnetsError(f"Mask entry '{name}' is a {type(value).__name__}; expected a torch.Tensor.")
    if value.dtype != torch.bool and not value.dtype.is_floating_point:
        raise SubnetsError(
            f"Mask entry '{name}' has dtype {value.dtype}; expected bool (binary mask) or a floating-point state."
        )
    return value


def encode_masks(masks: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise a mask dict to safetensors bytes (bool entries bit-packed, others contiguous in their dtype)."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    for name, value in masks.items():
        value = check_mask_tensor(name, value)
        if value.dtype == torch.bool:
            tensors[name] = pack_bits(value)
            layout[name] = {"dtype": BOOL, "shape": list(value.shape)}
        else:
            tensors[name] = value.detach().to("cpu").contiguous()
            layout[name] = {"dtype": str(value.dtype).removeprefix("torch."), "shape": list(value.shape)}
    header = dict(metadata or {})
    header[LAYOUT_KEY] = json.dumps(layout, separators=(",", ":"))
    return save_safetensors(tensors, metadata=header)


def read_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors byte string, without decoding its tensors."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
        return dict(header.get("__metadata__") or {})
    except (ValueError, UnicodeDecodeError) as e:
        raise SubnetsError(f"Not a readable safetensors file: its header is damaged ({e.__class__.__name__}).") from e


def decode_masks(data: bytes) -> dict[str, torch.Tensor]:
    """Inverse of `encode_masks`."""
    layout_text = read_metadata(data).get(LAYOUT_KEY)
    if layout_text is None:
        raise SubnetsError(f"The safetensors file has no '{LAYOUT_KEY}' metadata; expected a file written by the mask store.")
    try:
        tensors = load_safetensors(data)
    except SafetensorError as e:
        raise SubnetsError(f"The mask file is damaged and cannot be decoded ({e}).") from e
    masks: dict[str, torch.Tensor] = {}
    for name, entry in json.loads(layout_text).items():
        shape = tuple(entry["shape"])
        masks[name] = unpack_bits(tensors[name], shape) if entry["dtype"] == BOOL else tensors[name].reshape(shape)
    return masks
