"""Bring your own training loop: a mask method attached to any model, driven from the user's loop (docs/api.md).

As torch.ao.pruning's sparsifier and Torch-Pruning's pruner do, `attach` puts a method on a model and returns a
handle; the user's loop adds `handle.penalty()` to its loss, calls `handle.after_backward()` between backward and
the optimizer step, and `handle.step()` after it. The handle holds the very callbacks the toolkit's `Trainer` runs
(FixedLambda, Lagrangian, ScoreSchedule in `masking.methods`, FixedMaskCallback), built by the method's own stage-2
builder, and calls their hooks in the Trainer's order (docs/ARCHITECTURE.md, "Step order"); `LoopState` gives them
the few trainer attributes they read. `finalize` (torch.ao's `squash_mask`) leaves a plain model.

Model states (every function says which it leaves):
* attached (`attach`): mask parametrizations on the targets, every model weight frozen, only the mask states
  train; `model.save_pretrained` writes what `finalize` would return (the current binary mask as exact zeros on the
  original weights, gates left out), and refuses a state dict that holds parametrization keys.
* fixed (`fix_mask`, `handle.apply`): a plain model whose pruned weights are exact zeros and stay zero while the
  handle is stepped.
* plain (`finalize`): no parametrizations, the mask as exact zeros, the trainable flags as before `attach`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.nn.utils import parametrize

from .distributed import Distributed
from .errors import SubnetsError
from .masking.base import MaskParametrization, attached_masks, binary_mask, mask_states
from .masking.callbacks import FixedMaskCallback, MaskSearchCallback
from .masking.draw import draw_mask
from .masking.fixed import FixedMask
from .masking.methods import MASK_METHODS, FoundMask, SearchContext
from .masking.search import SearchArguments, search_targets
from .objectives import ADVERSARIES, DEBIAS_LOSSES, ObjectiveArguments, build_objective
from .registry import OptionGroups
from .sparsity import sparsity_report
from .tasks import TaskSpec
from .training import Callback, Objective
from .weights import apply_masks

LOOP_METHODS = ("hard_concrete", "scores")  # the methods that train in one loop (IMP retrains in rounds)


class LoopState:
    """The trainer attributes the mask callbacks read (`subnets.training.Trainer`'s names), kept for a loop that is
    not the toolkit's: the step counter advances with `Subnet.step()`; the device is the model's when it starts."""

    def __init__(self, model: torch.nn.Module, max_steps: int, output_dir: str | os.PathLike | None):
        distributed = Distributed.current()
        self.model, self.max_steps, self.global_step, self.epoch = model, max_steps, 0, 0
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.rank, self.world_size = distributed.rank, distributed.world_size
        self.is_main_process = distributed.is_main_process
        self.device = _parameter_device(model)


def _parameter_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class Subnet:
    """A mask method attached to a model and driven by the user's loop. Per optimizer step:

        loss = your_loss + handle.penalty()     # the method's regulariser (0 where it has none)
        loss.backward()
        handle.after_backward()                  # before clipping and optimizer.step()
        optimizer.step(); optimizer.zero_grad()
        handle.step()                            # after optimizer.step()

    Build the optimizer from `handle.param_groups()`. The handle starts (its callbacks' `on_train_begin`) on first
    use, on the model's device then: place the model before that and do not move it afterwards.
    """

    def __init__(self, model: torch.nn.Module, callbacks: Sequence[Callback], max_steps: int, *,
                 output_dir: str | os.PathLike | None = None):
        self.model, self.callbacks = model, list(callbacks)
        self.trainer = LoopState(model, max_steps, output_dir)
        self._started = self._finished = False
        self._backward_done = False

    @property
    def max_steps(self) -> int:
        return self.trainer.max_steps

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    def _start(self) -> None:
        if self._finished:
            raise SubnetsError("This subnets handle was finalized; expected a new one (attach or fix_mask).")
        device = _parameter_device(self.model)
        if not self._started:
            self.trainer.device = device
            for cb in self.callbacks:
                cb.on_train_begin(self.trainer)
            self._started = True
        elif device != self.trainer.device:
            raise SubnetsError(f"The model moved from {self.trainer.device} to {device} after its subnets handle "
                               f"started; expected the model on its device before the first param_groups(), "
                               f"penalty() or step().")

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for your optimizer: the method's own (mask states with their lr and weight decay,
        Lagrange multipliers) and one group of the model's other trainable parameters (if any)."""
        groups = self.method_groups()
        claimed = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in claimed]
        return ([{"params": rest}] if rest else []) + groups

    def method_groups(self) -> list[dict[str, Any]]:
        """The method's own parameter groups only (what `param_groups` adds to the model's)."""
        self._start()
        return [g for cb in self.callbacks for g in cb.param_groups(self.trainer)]

    def penalty(self) -> torch.Tensor:
        """The method's loss term for this step (the L0 penalty or Lagrangian; a zero tensor where there is none):
        add it once per optimizer step."""
        self._start()
        terms = [loss for cb in self.callbacks if (loss := cb.extra_loss(self.trainer)) is not None]
        if not terms:
            return torch.zeros((), device=self.trainer.device)
        return torch.stack([t.float() for t in terms]).sum()

    def after_backward(self) -> None:
        """Gradients are ready: the method's gradient edits (pruned gradients zeroed, Lagrange multipliers' gradients
        negated for ascent). Call before clipping and `optimizer.step()`."""
        self._start()
        for cb in self.callbacks:
            cb.on_after_backward(self.trainer)
        self._backward_done = True

    def step(self) -> None:
        """After `optimizer.step()`: advance the step counter, then the method's step-end work (thresholds reset,
        pruned weights re-zeroed)."""
        self._start()
        if not self._backward_done:
            raise SubnetsError("handle.step() was called without handle.after_backward() since the last step; "
                               "expected after_backward() between backward() and optimizer.step().")
        self._backward_done = False
        self.trainer.global_step += 1
        for cb in self.callbacks:
            cb.on_step_end(self.trainer)

    def log_scalars(self) -> dict[str, float]:
        """The method's scalars (sparsity, lambda, expected sparsity, ...), as the Trainer logs them (host reads:
        call at logging steps only)."""
        scalars: dict[str, float] = {}
        for cb in self.callbacks:
            scalars.update(cb.log_scalars(self.trainer))
        return scalars

    def on_evaluate(self, metrics: dict[str, float]) -> None:
        """After an evaluation of the model: the callbacks record what was evaluated (a search writes the evaluated
        mask to `<output_dir>/mask-snapshots/step-<k>.safetensors`)."""
        if self.trainer.output_dir is None:
            raise SubnetsError("on_evaluate writes the evaluated mask under the handle's output_dir; expected "
                               "attach(..., output_dir=...).")
        for cb in self.callbacks:
            cb.on_evaluate(self.trainer, metrics)

    def mask(self) -> dict[str, torch.Tensor]:
        """The current binary mask (True = kept), weight-shaped, keyed by parameter name."""
        raise NotImplementedError

    def sparsity(self) -> float:
        """Fraction of the masked weights that the current binary mask prunes."""
        return sparsity_report({n: m.cpu() for n, m in self.mask().items()}).global_sparsity

    def finalize(self) -> torch.nn.Module:
        """The plain model: no parametrizations, the mask as exact zeros, the trainable flags as before; the handle
        is done afterwards."""
        raise NotImplementedError


class MaskSearch(Subnet):
    """A mask search in the user's loop (`attach`): the model is gated until `finalize` or `apply`."""

    def __init__(self, model: torch.nn.Module, control: MaskSearchCallback, max_steps: int,
                 trainable: dict[str, bool], *, output_dir: str | os.PathLike | None = None):
        super().__init__(model, [control], max_steps, output_dir=output_dir)
        self.masks: dict[str, MaskParametrization] = control.masks
        self._trainable = trainable

    def mask(self) -> dict[str, torch.Tensor]:
        return binary_mask(self.masks)

    def state(self) -> dict[str, torch.Tensor]:
        """The real-valued mask state (log_alpha or scores), weight-shaped: higher = more important."""
        return mask_states(self.masks)

    def draw(self, sparsity: float, *, scope: str = "global") -> dict[str, torch.Tensor]:
        """A binary ticket pruning exactly round(sparsity x n) of the lowest-state weights (stage 3's draw)."""
        return draw_mask(self.state(), sparsity, scope=scope)

    def finalize(self, ticket: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """Remove the gates, keep the original weights and zero those `ticket` prunes (default: the current binary
        mask, `mask()`); restores every parameter's trainable flag and `save_pretrained`. Returns the model, plain."""
        ticket = self.mask() if ticket is None else dict(ticket)
        missing = sorted(set(self.masks) - set(ticket))
        if missing:
            raise SubnetsError(f"The ticket has no entry for the masked weight '{missing[0]}'; expected one bool "
                               f"mask per target ({len(self.masks)} in all).")
        _remove_gates(self.model)
        apply_masks(self.model, {n: m.bool() for n, m in ticket.items()})
        for name, param in self.model.named_parameters():
            param.requires_grad_(self._trainable.get(name, True))
        self._finished = True
        return self.model

    def apply(self, ticket: Mapping[str, torch.Tensor]) -> "FixedMaskTraining":
        """Finalize with `ticket` and keep it fixed from now on: a handle for retraining the same model (its
        weights are those the search started from); `fix_mask` does the same for another model (e.g. rewound)."""
        self.finalize(ticket)
        return fix_mask(self.model, ticket)


class FixedMaskTraining(Subnet):
    """Retraining with a fixed binary mask (`fix_mask`): the model is plain; pruned weights stay exact zeros."""

    def __init__(self, model: torch.nn.Module, fixed: FixedMask):
        super().__init__(model, [FixedMaskCallback(fixed)], 0)  # nothing of it depends on the number of steps
        self.fixed = fixed

    def mask(self) -> dict[str, torch.Tensor]:
        return self.fixed.mask

    def finalize(self) -> torch.nn.Module:
        """The model with the pruned weights zeroed once more (it is plain already)."""
        self.fixed.zero_weights()
        self._finished = True
        return self.model


def _split_options(classes: Sequence[type], options: dict[str, Any], what: str) -> list[Any]:
    """Argument dataclasses from keyword options (each name goes to the class that has it); unknown names refused."""
    fields = {f.name: cls for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise SubnetsError(f"Unknown option(s) {', '.join(unknown)} for {what}; expected some of "
                           f"{', '.join(sorted(fields))}.")
    return [cls(**{k: v for k, v in options.items() if fields[k] is cls}) for cls in classes]


def _refuse_training() -> Any:
    raise SubnetsError("This mask method trains with the toolkit's own loop; expected one of "
                       f"{', '.join(LOOP_METHODS)} in your loop.")


class _LoopContext(SearchContext):
    """A search context whose training is the user's loop: the method's builder hands its callback over."""

    control: MaskSearchCallback | None = None

    def train_mask(self, control: MaskSearchCallback) -> FoundMask:
        self.control = control
        return FoundMask({}, None, {})


def attach(model: torch.nn.Module, method: str = "hard_concrete", *, max_steps: int,
           output_dir: str | os.PathLike | None = None, **options: Any) -> MaskSearch:
    """Attach a mask search to `model` for a loop of `max_steps` optimizer steps; returns its handle.

    `method`: hard_concrete | scores. `options`: stage 2's option names (`target_sparsity`, `granularity`,
    `mask_pooler`, `mask_classifier`, `scope`, `mask_lr` and the method's own: `controller`, `l0_lambda`,
    `lagrangian_lr`, `target_warmup`, ... for hard_concrete; `score_init`, `sparsity_schedule`,
    `threshold_interval`, ... for scores), with the stage's defaults; the method's builder is the stage's.

    Leaves the model attached: gates on the targets, every weight frozen, `save_pretrained` writing the finalized
    model (see the module docstring). Place the model on its device first. `output_dir`: where `on_evaluate`
    writes the evaluated masks (`SubnetsTrainer` uses its `args.output_dir`).
    """
    if method not in LOOP_METHODS:
        raise SubnetsError(f"Method '{method}' cannot run in your own loop; expected one of "
                           f"{', '.join(LOOP_METHODS)} (IMP retrains in rounds; the baselines do not train).")
    if max_steps < 1:
        raise SubnetsError(f"max_steps {max_steps} is out of range; expected the loop's number of optimizer "
                           f"steps (at least 1): the controllers' ramps are fractions of it.")
    entry = MASK_METHODS[method]
    groups = _split_options([SearchArguments, *entry.options], {**options, "method": method},
                            f"method '{method}'")
    search = groups[0]
    if attached_masks(model):
        raise SubnetsError("The model already carries subnets masks; expected a plain model (finalize the "
                           "earlier handle first).")
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    context = _LoopContext(model, search_targets(model, search), search, OptionGroups(groups), "loop", Path("."),
                           lambda out, extra: _refuse_training())
    entry.build(context)
    handle = MaskSearch(model, context.control, max_steps, trainable, output_dir=output_dir)
    guard_save_pretrained(model)
    return handle


def finalized_state_dict(model: torch.nn.Module, ticket: Mapping[str, torch.Tensor] | None = None,
                         ) -> dict[str, torch.Tensor]:
    """The state dict `finalize(model, ticket)` would leave, under plain names (original weights, the ticket's --
    default: the gates' current binary mask's -- pruned weights zero); the model is not changed."""
    masks = attached_masks(model)
    ticket = binary_mask(masks) if ticket is None else ticket
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    with torch.no_grad():
        for name in masks:
            original = model.get_submodule(name.rsplit(".", 1)[0]).parametrizations.weight.original
            state[name] = original * ticket[name].to(original.device, original.dtype)
    return state


def guard_save_pretrained(model: torch.nn.Module) -> None:
    """Make `model.save_pretrained` of a gated model write its finalized weights (plain names, binary mask applied)
    instead of parametrization keys that `from_pretrained` would silently re-initialise; `finalize` undoes it."""
    if attached_masks(model) and "save_pretrained" not in model.__dict__:
        model.save_pretrained = functools.partial(_save_gated, model, model.save_pretrained)


def _save_gated(model: torch.nn.Module, save: Any, directory: str | os.PathLike, *args: Any,
                state_dict: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> Any:
    if state_dict is not None and any(".parametrizations." in key for key in state_dict):
        raise SubnetsError("save_pretrained was given the state dict of a gated model (parametrization keys), "
                           "which from_pretrained would silently re-initialise; expected no state_dict, or "
                           "subnets.finalize(model) first.")
    if state_dict is None and attached_masks(model):
        state_dict = finalized_state_dict(model)
    return save(directory, *args, state_dict=state_dict, **kwargs)


def _remove_gates(model: torch.nn.Module) -> None:
    """Remove every mask parametrization, putting the original weights back; undo `guard_save_pretrained`."""
    for name in attached_masks(model):
        parametrize.remove_parametrizations(model.get_submodule(name.rsplit(".", 1)[0]), "weight",
                                            leave_parametrized=False)
    if isinstance(model.__dict__.get("save_pretrained"), functools.partial):
        del model.save_pretrained


def finalize(model: torch.nn.Module, ticket: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
    """torch.ao's `squash_mask` for any gated model (an `attach` handle's, or one `search_mask` returned): remove
    the gates, keep the original weights, zero those `ticket` prunes (default: each gate's current binary mask),
    and make every parameter trainable again (a handle's `finalize` restores the flags as they were instead).
    Leaves the model plain; `save_pretrained` then `from_pretrained` gives it back identically."""
    masks = attached_masks(model)
    if not masks:
        raise SubnetsError("The model carries no subnets masks; expected a model from attach() or search_mask().")
    chosen = binary_mask(masks) if ticket is None else {n: m.bool() for n, m in ticket.items()}
    _remove_gates(model)
    apply_masks(model, chosen)
    for param in model.parameters():
        param.requires_grad_(param.is_floating_point())
    return model


def fix_mask(model: torch.nn.Module, ticket: Mapping[str, torch.Tensor]) -> FixedMaskTraining:
    """Retrain `model` with `ticket` (bool, True = kept) fixed in your loop: zeroes the pruned weights now
    (stage 3's FixedMask) and keeps them zero while the handle is stepped. Leaves the model plain, weights pruned;
    refuses a gated model (finalize it first)."""
    if attached_masks(model):
        raise SubnetsError("The model still carries subnets masks; expected a plain model: call "
                           "subnets.finalize(model) (or handle.apply(ticket)) first.")
    return FixedMaskTraining(model, FixedMask(model, ticket))


def make_objective(task: TaskSpec, train_dataset: Any = None, *, adversary: str = "none", debias: str = "none",
                   label_smoothing: float = 0.0, **options: Any) -> Objective:
    """A training objective of the stages (`objective(model, batch, loss_scale) -> detached loss`: it runs the
    forward and backward passes itself): `adversary` freelb | pgd | roast, `debias` poe | reweight | conf_reg,
    with their stage option names (`adv_steps`, `adv_lr`, `bias_predictions`, ...). Batches carry `labels` (and
    `idx` for a debiasing loss). Changes no model."""
    ObjectiveArguments(adversary=adversary, debias=debias)  # one clear error for an unknown name
    used = [ObjectiveArguments, *dict.fromkeys(ADVERSARIES[adversary].options + DEBIAS_LOSSES[debias].options)]
    groups = _split_options(used, {**options, "adversary": adversary, "debias": debias},
                            f"adversary '{adversary}' and debias '{debias}'")
    return build_objective(groups[0], task, train_dataset, label_smoothing, options=OptionGroups(groups))


__all__ = ["FixedMaskTraining", "LOOP_METHODS", "LoopState", "MaskSearch", "Subnet", "attach", "finalize",
           "fix_mask", "make_objective"]
