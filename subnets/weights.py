"""A model's weights as plain tensors: binary masks applied in place, parametrizations read out, plain saving.

This is part of the base layer (docs/ARCHITECTURE.md): both the mask store (`masks`) and the library use it, and
it imports nothing of either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import torch
from torch.nn.utils import parametrize

from .errors import SubnetsError
from .io import atomic_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def raw_parameter(model: torch.nn.Module, name: str) -> torch.Tensor:
    """The stored tensor behind a canonical parameter name (the original of a parametrized weight)."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError as e:
        raise SubnetsError(f"The model has no parameter '{name}' (module '{module_name}' not found).") from e
    if parametrize.is_parametrized(module, attr):
        return getattr(module.parametrizations, attr).original
    value = getattr(module, attr, None)
    if not isinstance(value, torch.Tensor):
        raise SubnetsError(f"The model has no parameter '{name}'.")
    return value


def check_shapes(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Fail on the first mask entry whose parameter is missing or has another shape."""
    for name, mask in masks.items():
        param = raw_parameter(model, name)
        if tuple(param.shape) != tuple(mask.shape):
            raise SubnetsError(
                f"Mask entry '{name}' has shape {tuple(mask.shape)} but the model's parameter has shape "
                f"{tuple(param.shape)}; the mask belongs to another architecture."
            )


def apply_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Zero the pruned weights (mask False) of `model` in place; returns the model."""
    check_shapes(model, masks)
    for name, mask in masks.items():
        if mask.dtype != torch.bool:
            raise SubnetsError(f"Mask entry '{name}' has dtype {mask.dtype}; only binary (bool) masks can be applied.")
    with torch.no_grad():
        for name, mask in masks.items():
            param = raw_parameter(model, name)
            param.mul_(mask.to(param.device, param.dtype))
    return model


def is_parametrized(model: torch.nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


def require_plain(model: torch.nn.Module) -> None:
    """Refuse a model that still carries mask parametrizations (its weights are not what they seem)."""
    if is_parametrized(model):
        raise SubnetsError(
            "The model still carries parametrizations (mask modules); expected a plain model: make the masks "
            "permanent first (e.g. save it with subnets.weights.save_plain_model and load it back)."
        )


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with every parametrized tensor replaced by its current value (in eval mode) under its plain name.

    The model is left as it was. Removing parametrizations from a deep copy is not an option: the copy shares the
    dynamically created `Parametrized*` classes, so removal would break the original model.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
            for module_name, module in model.named_modules():
                if parametrize.is_parametrized(module):
                    for name in module.parametrizations.keys():
                        state[f"{module_name}.{name}"] = getattr(module, name).detach().clone()
    finally:
        model.train(was_training)
    return state


def save_plain_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, directory: str | os.PathLike,
                     extra_files: Callable[[Path], None] | None = None) -> None:
    """Save a `from_pretrained`-loadable directory with every mask made permanent (exact zeros, no hooks).

    The directory is written atomically; `extra_files(tmp_dir)` may add files (e.g. the evaluated mask) first.

    `save_pretrained` on a parametrized model writes `parametrizations.*.original` keys that `from_pretrained`
    silently re-initialises, so the current parametrized values are saved under plain names (see plain_state_dict).
    """
    state = plain_state_dict(model) if is_parametrized(model) else None
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if extra_files is not None:
            extra_files(tmp)
