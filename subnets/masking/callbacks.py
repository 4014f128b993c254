"""The training-loop callbacks every mask family shares (see `subnets.training.Callback` for the hook order); a
method's own controller subclasses `MaskSearchCallback` in its file (`methods/hard_concrete.py`: `FixedLambda`,
`Lagrangian`; `methods/scores.py`: `ScoreSchedule`).

* `MaskSearchCallback`: trains the mask states with their own optimizer group, logs sparsity curves, snapshots
  the evaluated binary mask at every evaluation and writes it beside the best checkpoint (the mask that was
  evaluated is the one saved; SRNets' reference re-thresholded it).
* `FixedMaskCallback`: retraining with a fixed binary mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, atomic_write_text
from ..sparsity import flip_rate, sparsity_report, sparsity_scalars
from ..targets import Target, find_targets
from ..training import Callback, Trainer
from .base import MaskParametrization, binary_mask, mask_states
from .fixed import FixedMask

BINARY_FILE, STATE_FILE = "mask.safetensors", "mask_state.safetensors"
SEARCH_NOTE_FILE = "README.md"
SEARCH_NOTE = f"""# Mask search checkpoint: the weights as the search evaluated them (not the ticket)

This folder loads with `from_pretrained`, but its masked matrices hold each weight times the mask's evaluation
value: for hard-concrete gates the deterministic gate, a value in [0, 1] (kept weights are scaled, e.g. by 0.6),
for score masks 0 or 1. Its `eval_*` metrics are this model's. The binary ticket (the `sparsity` of the run's
metrics) is `{BINARY_FILE}` here and in the mask store, the real-valued state `{STATE_FILE}`.
For the ticket on the original weights: `subnets-masks export <ticket id> --format dense --model <the search's
model>`; to retrain it: stage 3 (`subnets-retrain --mask <this run>`). See docs/mask_search.md.
"""


def save_mask_file(path: Path, mask: dict[str, torch.Tensor]) -> None:
    """Write a mask dict as safetensors, atomically (bool stays bool)."""
    from safetensors.torch import save

    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in mask.items()}))


class MaskSearchCallback(Callback):
    """Optimises the mask states (lr, weight decay of their own) and records what each evaluation saw."""

    def __init__(self, masks: dict[str, MaskParametrization], *, lr: float, weight_decay: float = 0.0):
        self.masks, self.lr, self.weight_decay = masks, lr, weight_decay
        self.evaluated: dict[str, torch.Tensor] | None = None
        self._previous: dict[str, torch.Tensor] | None = None
        self._targets: list[Target] | None = None

    def param_groups(self, trainer: Trainer) -> list[dict[str, Any]]:
        params = [p for m in self.masks.values() for p in m.parameters()]
        return [{"params": params, "lr": self.lr, "weight_decay": self.weight_decay}]

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        current = binary_mask(self.masks)
        flip = flip_rate(self._previous, current) if self._previous is not None else None
        self._previous = current
        if self._targets is None:  # the model's targets, so that fused projections are reported per role
            found = {t.name: t for t in find_targets(trainer.model, pooler=True, classifier=True, word_embeddings=True)}
            self._targets = [found[name] for name in current] if set(current) <= set(found) else []
        return sparsity_scalars(sparsity_report(current, self._targets or None), flip=flip)

    def state_dict(self) -> dict[str, Any]:
        """The mask of the last logging step, so that a resumed run's first log has its flip rate."""
        return {"previous": self._previous} if self._previous is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(p for m in self.masks.values() for p in m.parameters()).device
        self._previous = {n: t.to(device) for n, t in state["previous"].items()} if "previous" in state else None

    def on_evaluate(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.evaluated = binary_mask(self.masks)
        if trainer.is_main_process:
            save_mask_file(trainer.output_dir / "mask-snapshots" / f"step-{trainer.global_step}.safetensors",
                           self.evaluated)

    def on_save(self, trainer: Trainer, directory: Path, kind: str) -> None:
        if kind == "best" and self.evaluated is not None:
            save_mask_file(directory / BINARY_FILE, self.evaluated)
            save_mask_file(directory / STATE_FILE, mask_states(self.masks))
            atomic_write_text(directory / SEARCH_NOTE_FILE, SEARCH_NOTE)


class FixedMaskCallback(Callback):
    """Retraining with a fixed mask: pruned gradients zeroed before clipping, pruned weights re-zeroed after
    every optimizer step, so weight decay and momentum never revive them."""

    def __init__(self, fixed: FixedMask):
        self.fixed = fixed

    def on_train_begin(self, trainer: Trainer) -> None:
        self.fixed.bind(trainer.model)  # after the Trainer placed the model: multipliers on its device

    def on_after_backward(self, trainer: Trainer) -> None:
        self.fixed.zero_grads()

    def on_step_end(self, trainer: Trainer) -> None:
        self.fixed.zero_weights()

    def on_save(self, trainer: Trainer, directory: Path, kind: str) -> None:
        save_mask_file(directory / BINARY_FILE, self.fixed.mask)
