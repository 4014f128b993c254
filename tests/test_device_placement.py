"""Every tensor a run holds follows the model's device, checked on CPU for every stage family.

The Trainer places the model on a stand-in device, PyTorch's `meta` device (CPU-only machines have no other):
 1. after the first optimizer step, every tensor held by the model (parametrizations included), a callback (a
    controller, a fixed mask), the optimizer (its state too) or the objective must be on `meta`: a tensor built
    on the CPU before the Trainer moved the model and never moved shows up here, as it would on CUDA;
 2. the steady-state steps then run on `meta`, where a CPU tensor meeting a model tensor raises and any host read
    (`item`, `nonzero`, `bool`, ...) raises, as on CUDA. 0-d CPU tensors are allowed, there as on CUDA (AdamW's
    step counters).
The run is stopped at the end of the last training step, before the loop logs, evaluates or checkpoints: those
read values on the host by design, and `meta` tensors have no values.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import PreTrainedModel

from stage_families import (FAMILIES, MAX_STEPS, WARMUP_STEPS, SteadyStateGuard, make_workspace, prepare_family,
                            run_family)
from subnets.distributed import Distributed
from subnets.selective import recording

STAND_IN = torch.device("meta")


class _StopRun(Exception):
    """Raised by the guard at the end of the last step, before the loop reads anything on the host."""


def held_tensors(root: object, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor reachable from `root` through modules, the project's objects, containers and
    optimizers (not through datasets, tokenizers or the trainer)."""
    found: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()

    def visit(obj: object, path: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append((path, obj))
        elif isinstance(obj, torch.nn.Module):
            for name, tensor in [*obj.named_parameters(), *obj.named_buffers()]:
                visit(tensor, f"{path}.{name}")
            for name, value in vars(obj).items():
                if not name.startswith("_"):
                    visit(value, f"{path}.{name}")
        elif isinstance(obj, torch.optim.Optimizer):
            for i, group in enumerate(obj.param_groups):
                visit(group["params"], f"{path}.param_groups[{i}]")
            for j, state in enumerate(obj.state.values()):
                visit(state, f"{path}.state[{j}]")
        elif isinstance(obj, dict):
            for key, value in obj.items():
                visit(value, f"{path}[{key!r}]")
        elif isinstance(obj, (list, tuple, set)):
            for i, value in enumerate(obj):
                visit(value, f"{path}[{i}]")
        elif type(obj).__module__.startswith(("subnets", "masks")) and hasattr(obj, "__dict__"):
            for name, value in vars(obj).items():
                if name != "trainer":
                    visit(value, f"{path}.{name}")

    visit(root, prefix)
    return found


def misplaced(trainer) -> list[str]:
    """The tensors of a run that are not on the stand-in device (0-d CPU scalars allowed)."""
    holders = [(trainer.model, "model"), (trainer.optimizer, "optimizer"), (trainer.objective, "objective"),
               *[(cb, f"callback {type(cb).__name__}") for cb in trainer.callbacks
                 if not isinstance(cb, PlacementGuard)]]
    bad = []
    for holder, name in holders:
        for path, tensor in held_tensors(holder, name):
            if tensor.device != STAND_IN and not (tensor.device.type == "cpu" and tensor.dim() == 0):
                bad.append(f"{path} on {tensor.device}")
    return bad


class PlacementGuard(SteadyStateGuard):
    """Checks placement after the first optimizer step, then stops the run after its last training step."""

    def __init__(self):
        super().__init__(contextlib.nullcontext)
        self.checked, self.problems = 0, []

    def on_step_end(self, trainer) -> None:
        if trainer.global_step == 1:
            self.problems += misplaced(trainer)
            self.checked += 1
        super().on_step_end(trainer)
        if trainer.global_step == trainer.max_steps:
            raise _StopRun


class _SinkStore:
    def __init__(self, root):
        pass

    def open_update_log(self, meta):
        return self

    def append(self, step, masks):
        pass


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("placement"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_tensor_follows_the_model_and_steps_run_off_the_host(family, places, tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_MASK_STORE", str(tmp_path / "store"))
    prepare_family(family, places)  # on the CPU, as a user's earlier stage would
    monkeypatch.setattr(Distributed, "device", property(lambda self: STAND_IN))
    # With the `kernels` package installed, transformers re-kernelizes the model in train(); it knows no meta device
    monkeypatch.setattr(PreTrainedModel, "use_kernels", property(lambda self: False, lambda self, value: None))
    # Update-mask records read values on the host by design, outside the steady-state steps (the model's
    # fingerprint as training begins, RoAST's masks as each epoch begins): they go to a sink here
    monkeypatch.setattr(recording, "describe_model", lambda model: {})
    monkeypatch.setattr(recording, "MaskStore", _SinkStore)
    guard = PlacementGuard()
    with pytest.raises(_StopRun):
        run_family(family, places, tmp_path / family, guard, monkeypatch)
    assert guard.checked == 1
    assert guard.problems == []
    assert guard.guarded_steps == MAX_STEPS - WARMUP_STEPS


def test_the_suite_runs_on_the_cpu_where_cuda_is_available(monkeypatch):
    from subnets.config import TrainingArguments
    from subnets.distributed import USE_CPU_ENV, pick_device
    from subnets.models import tiny_model
    from subnets.tasks import get_task
    from subnets.training import Trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs, simulated
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device() == torch.device("cpu")  # tests/conftest.py sets $SUBNETS_USE_CPU
    assert Distributed.current().device == torch.device("cpu")
    monkeypatch.setenv(USE_CPU_ENV, "0")
    assert pick_device() == torch.device("cuda:0")
    assert pick_device(local_rank=3) == torch.device("cuda:1")  # ranks share the GPUs round-robin
    assert pick_device(use_cpu=True) == torch.device("cpu")
    task = get_task("sst2")
    model, tokenizer = tiny_model("bert", label_names=task.label_names)
    args = TrainingArguments(output_dir="unused", use_cpu=True)
    assert Trainer(model, args, task, None, None, tokenizer).device == torch.device("cpu")
