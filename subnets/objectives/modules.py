"""Finding the pieces of a (possibly DDP-wrapped, possibly masked) classifier that objectives need."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch import nn

from ..errors import SubnetsError
from ..training import model_inputs


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside wrappers that keep it as `.module` (DDP, DataParallel), or the model."""
    while not hasattr(model, "get_input_embeddings") and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def split_batch(batch: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(model inputs, labels): every key except `labels` and `idx` is passed to the model unchanged."""
    if "labels" not in batch:
        raise SubnetsError("The training batch has no 'labels' entry; objectives need labelled batches.")
    return model_inputs(dict(batch)), batch["labels"]


def input_embeddings(model: nn.Module) -> nn.Module:
    """The word-embedding table (`get_input_embeddings()` of the unwrapped model)."""
    inner = unwrap(model)
    if not hasattr(inner, "get_input_embeddings"):
        raise SubnetsError(f"{type(inner).__name__} has no get_input_embeddings(); expected a transformers model.")
    return inner.get_input_embeddings()


def embeddings_block(model: nn.Module) -> nn.Module:
    """The module whose output RoAST perturbs: the embeddings block that owns the word embeddings (BertEmbeddings,
    RobertaEmbeddings, ModernBertEmbeddings, ...: the embedding sum after LayerNorm), or the word embeddings
    themselves where their owner is the whole transformer (GPT-2, Llama and the other decoders, which add
    positions inside the attention or the base model). Found by structure, not by name."""
    words = input_embeddings(model)
    for module in unwrap(model).modules():
        if any(child is words for child in module.children()):
            holds_blocks = any(isinstance(child, nn.ModuleList) for child in module.children())
            return words if holds_blocks else module
    raise SubnetsError("Could not find the module that owns the word embeddings; expected an HF encoder model.")


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for the backward passes inside the block when `enabled` is False.

    Multi-pass objectives only need the reduction once, after their last backward pass; nesting inside a
    trainer's own `no_sync()` (gradient accumulation) keeps that outer setting for the last pass.
    """
    if enabled or not isinstance(model, nn.parallel.DistributedDataParallel):
        yield
    else:
        with model.no_sync():
            yield


def token_mask(inputs: Mapping[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """[batch, length, 1] float mask of real tokens (all ones without an attention mask)."""
    mask = inputs.get("attention_mask")
    if mask is None:
        return torch.ones(like.shape[:2] + (1,), dtype=like.dtype, device=like.device)
    return mask.to(like.dtype).unsqueeze(-1)
