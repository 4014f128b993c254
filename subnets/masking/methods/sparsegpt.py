"""SparseGPT (Frantar & Alistarh 2023, Alg. 1): an approximate OBS solve per layer that prunes and updates the
remaining weights; the updated model is the run's checkpoint-best/ (the ticket's `weights`). docs/methods.md,
"One-shot pruning"; the options and the layer-by-layer driver are shared (`subnets.masking.oneshot`)."""

from __future__ import annotations

import torch

from ...errors import SubnetsError
from ...sparsity import Pattern, format_pattern, nm_mask
from ..calibration import InputStatistics
from ..oneshot import MatrixPruner, OneShotSearch, PrunedMatrix, lowest_pruned

# SparseGPT (Frantar & Alistarh 2023, Alg. 1): the mask is selected and the updates are applied in blocks of
# B_s = 128 columns, and H is dampened by 1% of its mean diagonal before the inverse (the reference code's
# defaults, IST-DASLab/sparsegpt: blocksize=128, percdamp=.01).
SPARSEGPT_BLOCK = 128
SPARSEGPT_DAMPENING = 0.01


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern: Pattern = None, *,
    mask: torch.Tensor | None = None, block: int = SPARSEGPT_BLOCK, dampening: float = SPARSEGPT_DAMPENING,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT (Frantar & Alistarh 2023, Alg. 1): prune `weight` column by column and update the columns not yet
    processed to compensate, with the inverse Hessian H^-1 of the layer-wise problem ||WX - W'X||^2, H = X X^T.

    The mask is chosen per block of `block` columns from w^2 / [H^-1]_jj^2 (the OBS saliency; N:M groups
    from the current, already-updated weights), unless a fixed `mask` (True = kept) is given. Returns the
    updated weight (pruned entries exactly zero) and the mask.
    """
    rows, cols = weight.shape
    if pattern is not None and (block % pattern[1] or cols % pattern[1]):
        raise SubnetsError(f"SparseGPT's {format_pattern(pattern)} groups must divide its block of {block} columns "
                           f"and the {cols} input features.")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype).clone()
    h = hessian.detach().to(dtype).clone()
    dead = torch.diag(h) == 0  # inputs that are always zero: any value is optimal; keep H invertible
    h[dead, dead] = 1.0
    h += dampening * torch.diag(h).mean() * torch.eye(cols, dtype=dtype, device=h.device)
    # Upper Cholesky factor of H^-1: row j holds the inverse Hessian of columns j.. once columns < j are fixed.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    kept = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device, torch.bool).clone()
    for start in range(0, cols, block):
        end = min(start + block, cols)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        errors = torch.zeros_like(w1)
        diag = torch.diag(hinv1)
        if mask is None and pattern is None:
            kept[:, start:end] = lowest_pruned((w1 / diag) ** 2, sparsity)
        for i in range(end - start):
            if mask is None and pattern is not None and i % pattern[1] == 0:
                group = slice(i, i + pattern[1])
                kept[:, start + i:start + i + pattern[1]] = nm_mask((w1[:, group] / diag[group]) ** 2, *pattern)
            column = w1[:, i]
            error = column * ~kept[:, start + i] / hinv1[i, i]
            w1[:, i:] -= error.unsqueeze(1) * hinv1[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, start:end] = w1 * kept[:, start:end]
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w.to(weight.dtype), kept


def _sparsegpt(weight: torch.Tensor, stats: InputStatistics | None, sparsity: float, pattern: Pattern) -> PrunedMatrix:
    updated, kept = sparsegpt_prune(weight, stats.hessian, sparsity, pattern)
    return PrunedMatrix(kept, weight=updated)


SPARSEGPT = MatrixPruner("hessian", _sparsegpt)

build_sparsegpt = OneShotSearch(SPARSEGPT)
