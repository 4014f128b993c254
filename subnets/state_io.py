"""Nested training states (optimizer, scheduler, RNG, callbacks) on disk without pickle: JSON plus safetensors.

`encode(state)` turns a nested structure of dicts, lists, tuples, numbers, strings, numpy arrays and tensors into
a JSON-able tree in which every tensor is replaced by a reference `{"__tensor__": key}` into a flat dict of
tensors (written with safetensors). Non-string dict keys, tuples, numpy arrays and non-finite floats get tagged
forms, so `decode(encode(x))` gives back the same types and the JSON stays valid (no NaN literals). Loading
never runs code from the file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

_TAGS = ("__tensor__", "__tuple__", "__dict__", "__ndarray__", "__float__")


def _plain_tensor(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """A contiguous CPU copy that shares storage with no other saved tensor (safetensors refuses aliases)."""
    t = t.detach().cpu().contiguous()
    ptr = t.untyped_storage().data_ptr()
    if ptr in seen:
        t = t.clone()
    seen.add(t.untyped_storage().data_ptr())
    return t


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict ready for `safetensors.torch.save_file` (CPU, contiguous, no shared storage)."""
    seen: set[int] = set()
    return {k: _plain_tensor(v, seen) for k, v in state.items()}


def encode(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able tree, tensors) for a nested state; see the module docstring for the tagged forms."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = _plain_tensor(x, seen)
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, (bool, np.bool_)):
            return bool(x)
        if isinstance(x, (int, np.integer)):
            return int(x)
        if isinstance(x, (float, np.floating)):
            return float(x) if math.isfinite(x) else {"__float__": str(float(x))}
        if x is None or isinstance(x, str):
            return x
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) and k not in _TAGS for k in x):
                return {k: walk(v) for k, v in x.items()}
            return {"__dict__": [[walk(k), walk(v)] for k, v in x.items()]}
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint (expected tensors, arrays, numbers, "
                        f"strings, lists, tuples and dicts)")

    return walk(obj), tensors


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `encode`; raises KeyError/ValueError/TypeError on a tree it did not write."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(decode(v, tensors) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {decode(k, tensors): decode(v, tensors) for k, v in tree["__dict__"]}
    if "__ndarray__" in tree:
        return np.asarray(tree["__ndarray__"], dtype=np.dtype(tree["dtype"]))
    if "__float__" in tree:
        return float(tree["__float__"])
    return {k: decode(v, tensors) for k, v in tree.items()}


def dumps(tree: Any) -> str:
    """Strict JSON (a non-finite float left untagged is an error, not an invalid `NaN` literal)."""
    return json.dumps(tree, indent=1, allow_nan=False) + "\n"
