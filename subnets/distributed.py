"""The process group a run trains in, prepared outside the Trainer: the stages call `init_distributed()` (under
torchrun it initialises torch.distributed), the Trainer takes the resulting `Distributed` (by default the
process group that already exists) and wraps its model with `Distributed.wrap` when training starts.

The one device rule (`pick_device`): CUDA where available, one GPU per local rank (round-robin when several
ranks share fewer GPUs), the CPU with `--use_cpu` or `$SUBNETS_USE_CPU=1` (as accelerate's ACCELERATE_USE_CPU;
the test suite sets it, so that it means the same on every machine).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import SubnetsError

USE_CPU_ENV = "SUBNETS_USE_CPU"


def cpu_forced() -> bool:
    """Whether `$SUBNETS_USE_CPU` asks for the CPU."""
    return os.environ.get(USE_CPU_ENV, "").strip().lower() in ("1", "true", "yes")


def pick_device(local_rank: int = 0, use_cpu: bool = False) -> torch.device:
    """`cuda:<local_rank mod GPUs>` where CUDA is available and the CPU is not asked for, else the CPU."""
    if use_cpu or cpu_forced() or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (or a single process); readable before the process group exists."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank, number of processes, local rank (its GPU on this node).

    `use_cpu`: the CPU even where CUDA is available. `always_wrap`: wrap the model in DDP even with one process
    (the GPU check exercises DDP on one GPU this way; normal runs leave a single process unwrapped)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    use_cpu: bool = False
    always_wrap: bool = False

    @property
    def device(self) -> torch.device:
        return pick_device(self.local_rank, self.use_cpu)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls, use_cpu: bool = False) -> "Distributed":
        """The initialised process group (a single process if there is none); a torchrun launch that nobody
        initialised is refused, since every process would otherwise train alone into the same folder."""
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), use_cpu)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise SubnetsError(f"This process was launched with WORLD_SIZE={world}, but torch.distributed is not "
                               "initialised; expected subnets.distributed.init_distributed() to be called before "
                               "the Trainer is built.")
        return cls(use_cpu=use_cpu)

    def on_cpu(self) -> "Distributed":
        """The same place in the run, training on the CPU."""
        return dataclasses.replace(self, use_cpu=True)

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """`model` under DistributedDataParallel when there is more than one process (or `always_wrap`), else
        `model` itself."""
        if self.world_size == 1 and not self.always_wrap:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)


def init_distributed(use_cpu: bool = False, backend: str | None = None) -> Distributed:
    """Initialise torch.distributed when launched by torchrun and return this process's `Distributed`; without
    torchrun, or when already initialised, nothing changes. Backend: `backend`, else NCCL on CUDA (one GPU per
    rank) and gloo on the CPU; gloo ranks may share a GPU (NCCL refuses that)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(int(os.environ.get("LOCAL_RANK", "0")), use_cpu)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":  # NCCL's communicators use the current device
            torch.cuda.set_device(device)
        chosen = backend or ("nccl" if device.type == "cuda" else "gloo")
        if chosen == "nccl" and device.type != "cuda":
            raise SubnetsError("--ddp_backend nccl needs CUDA devices; expected gloo for training on the CPU.")
        dist.init_process_group(backend=chosen)
    return Distributed.current(use_cpu)
