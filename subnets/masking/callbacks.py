"""Training-loop callbacks of the mask families (see `subnets.training.Callback` for the hook order).

* `MaskSearchCallback`: trains the mask states with their own optimizer group, logs sparsity curves, snapshots
  the evaluated binary mask at every evaluation and writes it beside the best checkpoint (the mask that was
  evaluated is the one saved; SRNets' reference re-thresholded it).
* `FixedLambda` / `Lagrangian`: the two L0 controllers for hard-concrete gates.
* `ScoreSchedule`: threshold resets (fixed or cubic gradual sparsity) for straight-through score masks.
* `FixedMaskCallback`: retraining with a fixed binary mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, atomic_write_text
from ..sparsity import flip_rate, gate_scalars, sparsity_report, sparsity_scalars
from ..targets import Target, find_targets
from ..training import Callback, Trainer
from .base import MaskParametrization, binary_mask, mask_states
from .fixed import FixedMask
from .hard_concrete import HardConcreteGate, deterministic_gate, expected_density, mean_expected_l0
from .scores import ScoreMask, cubic_sparsity, reset_thresholds

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


def _ramp(step: int, max_steps: int, start: float, end: float) -> float:
    """0 before `start` x max_steps, 1 after `end` x max_steps, linear in between."""
    begin, finish = start * max_steps, end * max_steps
    if finish <= begin:
        return float(step >= begin)
    return min(1.0, max(0.0, (step - begin) / (finish - begin)))


class FixedLambda(MaskSearchCallback):
    """Robust Tickets: loss += lambda_t x L0, L0 averaged per matrix then over matrices; lambda_t ramps linearly
    from 0 to `lam` between `ramp_start` and `ramp_end` (fractions of training, 10% and 40% by default)."""

    def __init__(self, gates: dict[str, HardConcreteGate], *, lam: float, lr: float = 0.1, weight_decay: float = 1e-6,
                 ramp_start: float = 0.1, ramp_end: float = 0.4):
        super().__init__(gates, lr=lr, weight_decay=weight_decay)
        self.lam, self.ramp_start, self.ramp_end = lam, ramp_start, ramp_end
        self._penalty = torch.zeros(())

    def current_lambda(self, trainer: Trainer) -> float:
        return self.lam * _ramp(trainer.global_step, trainer.max_steps, self.ramp_start, self.ramp_end)

    def extra_loss(self, trainer: Trainer) -> torch.Tensor:
        self._penalty = self.current_lambda(trainer) * mean_expected_l0(self.masks)
        return self._penalty

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        return {**super().log_scalars(trainer), **_gate_scalars(self.masks),
                "train/lambda": self.current_lambda(trainer), "train/l0_penalty": float(self._penalty.detach())}


class Lagrangian(MaskSearchCallback):
    """CoFiPruning: loss += l1 (s - t) + l2 (s - t)^2 with s the expected sparsity (weights counted) and t the
    target, warmed up linearly from 0 over `warmup_fraction` of training; l1, l2 are trained by gradient ascent
    (their gradients are negated before the optimizer step)."""

    def __init__(self, gates: dict[str, HardConcreteGate], *, target: float, lr: float = 0.1,
                 weight_decay: float = 0.0, lagrangian_lr: float = 0.1, warmup_fraction: float = 0.5):
        super().__init__(gates, lr=lr, weight_decay=weight_decay)
        self.target, self.lagrangian_lr, self.warmup_fraction = target, lagrangian_lr, warmup_fraction
        self.multipliers = torch.nn.Parameter(torch.zeros(2))
        self._expected = torch.zeros(())

    def on_train_begin(self, trainer: Trainer) -> None:
        # The Trainer has placed the model (and so the gates): the multipliers join them before the optimizer is
        # built, so that the penalty, its gradient and the optimizer state stay on the model's device.
        self.multipliers = torch.nn.Parameter(self.multipliers.detach().to(trainer.device))

    def current_target(self, trainer: Trainer) -> float:
        return self.target * _ramp(trainer.global_step, trainer.max_steps, 0.0, self.warmup_fraction)

    def param_groups(self, trainer: Trainer) -> list[dict[str, Any]]:
        return super().param_groups(trainer) + [
            {"params": [self.multipliers], "lr": self.lagrangian_lr, "weight_decay": 0.0, "clip": False}]

    def extra_loss(self, trainer: Trainer) -> torch.Tensor:
        self._expected = 1.0 - expected_density(self.masks)
        gap = self._expected - self.current_target(trainer)
        return self.multipliers[0] * gap + self.multipliers[1] * gap * gap

    def on_after_backward(self, trainer: Trainer) -> None:
        if self.multipliers.grad is not None:
            self.multipliers.grad.neg_()

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        l1, l2 = self.multipliers.detach().tolist()
        return {**super().log_scalars(trainer), **_gate_scalars(self.masks),
                "train/lambda": l1, "train/lambda2": l2, "train/target_sparsity": self.current_target(trainer),
                "train/expected_sparsity": float(self._expected.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "multipliers": self.multipliers.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.multipliers.copy_(state["multipliers"])


def _gate_scalars(gates: dict[str, HardConcreteGate]) -> dict[str, float]:
    with torch.no_grad():
        values = {n: deterministic_gate(g.log_alpha) for n, g in gates.items()}
        return gate_scalars(values, expected_l0=float(mean_expected_l0(gates)))


class ScoreSchedule(MaskSearchCallback):
    """Re-sets score thresholds every `interval` steps to the scheduled sparsity (fixed, or cubic from
    `initial` to `final` between the fractions `start` and `end` of training), per matrix or globally."""

    def __init__(self, masks: dict[str, ScoreMask], *, final: float, initial: float | None = None, lr: float = 0.1,
                 interval: int = 10, scope: str = "per_matrix", start: float = 0.0, end: float = 0.0):
        super().__init__(masks, lr=lr)
        self.final, self.initial = final, final if initial is None else initial
        self.interval, self.scope, self.start, self.end = interval, scope, start, end

    def sparsity_at(self, trainer: Trainer) -> float:
        return cubic_sparsity(trainer.global_step, initial=self.initial, final=self.final,
                              start=int(self.start * trainer.max_steps), end=int(self.end * trainer.max_steps))

    def on_train_begin(self, trainer: Trainer) -> None:
        reset_thresholds(self.masks, self.sparsity_at(trainer), scope=self.scope)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.global_step % self.interval == 0:
            reset_thresholds(self.masks, self.sparsity_at(trainer), scope=self.scope)

    def log_scalars(self, trainer: Trainer) -> dict[str, float]:
        return {**super().log_scalars(trainer), "train/scheduled_sparsity": self.sparsity_at(trainer)}


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
