"""`SubnetsTrainer`: a `transformers.Trainer` that drives a subnets handle (docs/api.md, "HF Trainer").

The handle (`subnets.loop.attach` / `fix_mask`) is driven at the points of HF's loop that match the toolkit's
Trainer: its mask states join the optimizer with their own groups (`create_optimizer`), its penalty is
backpropagated once per optimizer step before the first micro-batch (`training_step`, locally under DDP as the
toolkit does), `after_backward` runs after the last micro-batch's backward and before HF clips, `step` after HF's
optimizer and scheduler steps (`on_step_end`), and its scalars join HF's training logs. An `objective`
(`subnets.make_objective`: FreeLB, PGD, PoE, ...) replaces HF's `compute_loss` with the stages' forward-and-backward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from .errors import SubnetsError
from .loop import MaskSearch, Subnet
from .training import Objective, log_key


class _Driver(TrainerCallback):
    """Steps the handle after each of HF's optimizer steps and hands it the evaluation metrics."""

    def __init__(self, trainer: "SubnetsTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        subnet = self.trainer.subnet
        if isinstance(subnet, MaskSearch) and state.max_steps != subnet.max_steps:
            raise SubnetsError(f"The transformers.Trainer runs {state.max_steps} optimizer steps but the handle was "
                               f"attached with max_steps={subnet.max_steps}; expected the same number (the "
                               f"controllers' ramps are fractions of it).")
        subnet.trainer.global_step = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.optimizer.zero_grad(set_to_none=True)  # HF zeroes the model's; Lagrange multipliers are not
        self.trainer.subnet.step()
        self.trainer.penalty_due = True

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        self.trainer.subnet.on_evaluate(metrics or {})


class SubnetsTrainer(Trainer):
    """`transformers.Trainer(..., subnet=handle, objective=None)`: mask search (`attach`), fixed-mask retraining
    (`fix_mask`) and the stages' objectives inside HF's loop. Leaves the model in the handle's state (attached:
    call `handle.finalize()` after training; HF checkpoints of an attached model hold the finalized weights, so a
    search cannot resume from them and `load_best_model_at_end` is refused)."""

    def __init__(self, *args: Any, subnet: Subnet, objective: Objective | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if subnet.model is not self.model:
            raise SubnetsError("The handle belongs to another model; expected subnets.attach / fix_mask on the "
                               "model given to the Trainer.")
        if isinstance(subnet, MaskSearch) and self.args.load_best_model_at_end:
            raise SubnetsError("load_best_model_at_end would load finalized weights into a gated model; expected "
                               "load_best_model_at_end=False during a mask search.")
        out = Path(self.args.output_dir)
        if subnet.trainer.output_dir not in (None, out):
            raise SubnetsError(f"The handle writes to {subnet.trainer.output_dir} but the Trainer to {out}; expected "
                               f"one output_dir (or none given to attach).")
        subnet.trainer.output_dir = out
        self.subnet, self.objective = subnet, objective
        self.penalty_due = True
        self.add_callback(_Driver(self))

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint and isinstance(self.subnet, MaskSearch):
            raise SubnetsError("A mask search cannot resume from an HF checkpoint (it holds the finalized weights, "
                               "not the gates); expected a new run.")
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """HF's optimizer over the model's own trainable parameters, with the handle's groups (mask states, Lagrange
        multipliers) in place of HF's groups for those parameters."""
        if self.optimizer is not None:
            return self.optimizer
        claimed_groups = self.subnet.method_groups()
        claimed = {id(p) for g in claimed_groups for p in g["params"]}
        optimizer = super().create_optimizer(model)
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in claimed]
        for group in claimed_groups:
            optimizer.add_param_group(dict(group))
        return optimizer

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        if self.penalty_due:
            self.penalty_due = False
            penalty = self.subnet.penalty()
            if penalty.requires_grad:
                with self.accelerator.no_sync(model):  # same on every rank: the last micro-batch's reduce keeps it
                    penalty.backward()
        if self.objective is None:
            loss = super().training_step(model, inputs, num_items_in_batch)
        else:
            model.train()
            scale = 1.0 / self.current_gradient_accumulation_steps
            with self.compute_loss_context_manager():
                loss = self.objective(model, self._prepare_inputs(inputs), scale) * scale
        if self.accelerator.sync_gradients:  # the step's last micro-batch: before HF clips and steps
            self.subnet.after_backward()
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the method's scalars under the toolkit's keys
            logs = {**logs, **{log_key(tag): value for tag, value in self.subnet.log_scalars().items()}}
        super().log(logs, start_time)
