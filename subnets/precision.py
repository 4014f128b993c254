"""The one mixed-precision rule: bf16 autocast on CUDA when asked for, float32 everywhere else.

Training (`Trainer.autocast()`), evaluation (`evaluation.predict(..., bf16=)`), RoAST's Fisher pass and the attack
wrapper all enter their forward passes through `autocast`, so `--bf16 false` means float32 in every one of them.
"""

from __future__ import annotations

import torch


def autocast(device: torch.device, bf16: bool = True) -> torch.autocast:
    """bf16 autocast for `device` if it is a CUDA device and `bf16` is set; otherwise a disabled context (CPU
    always runs float32: its bf16 kernels are slower than float32 ones on most CPUs)."""
    cuda = device.type == "cuda"
    return torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda and bf16)
