"""SDPA attention without the host synchronisation transformers adds to every forward pass.

transformers' SDPA mask builder checks `padding_mask.all()` on every forward to skip the mask when nothing is
padded; on CUDA that reads a device value on the host (one sync per forward, an error under
`torch.cuda.set_sync_debug_mode("error")`). `SYNC_FREE_SDPA` is the same attention function with the mask always
built. Outputs are bitwise identical: with padding the mask is built either way, without it every position is
kept and the added bias is 0. The choice lives in the in-memory config only (`save_pretrained` does not write it).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

SYNC_FREE_SDPA = "sdpa_sync_free"


@functools.cache
def _register() -> None:
    """Register `SYNC_FREE_SDPA` with transformers, on first use: its attention modules load the model classes,
    which parsing a command's options does not need."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def sdpa_mask_always_built(*args: Any, **kwargs: Any) -> torch.Tensor | None:
        kwargs.update(allow_is_bidirectional_skip=False, allow_is_causal_skip=False)
        return sdpa_mask(*args, **kwargs)

    AttentionInterface.register(SYNC_FREE_SDPA, sdpa_attention_forward)
    AttentionMaskInterface.register(SYNC_FREE_SDPA, sdpa_mask_always_built)


def use_sync_free_attention(model: torch.nn.Module) -> None:
    """Switch a transformers model that uses SDPA attention to `SYNC_FREE_SDPA`; other models are left alone."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        _register()
        model.set_attn_implementation(SYNC_FREE_SDPA)
