"""The process group a run trains in, prepared outside the Trainer: the stages call `init_distributed()` (under
torchrun it initialises torch.distributed), the Trainer takes the resulting `Distributed` (by default the
process group that already exists) and wraps its model with `Distributed.wrap` when training starts."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import SubnetsError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: rank, number of processes, local rank (its GPU on this node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "Distributed":
        """The initialised process group (a single process if there is none); a torchrun launch that nobody
        initialised is refused, since every process would otherwise train alone into the same folder."""
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise SubnetsError(f"This process was launched with WORLD_SIZE={world}, but torch.distributed is not "
                               "initialised; expected subnets.distributed.init_distributed() to be called before "
                               "the Trainer is built.")
        return cls()

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """`model` under DistributedDataParallel when there is more than one process, else `model` itself."""
        if self.world_size == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)


def init_distributed() -> Distributed:
    """Initialise torch.distributed when launched by torchrun (NCCL with one GPU per rank on CUDA, gloo on CPU)
    and return this process's `Distributed`; without torchrun, or when already initialised, nothing changes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():  # NCCL's communicators use the current device: one GPU per rank
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Distributed.current()
