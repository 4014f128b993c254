"""Multi-pass objectives all-reduce once per micro-batch under DDP, checked in one process: a gloo process group
of world size 1 with the DDP wrap forced (`Distributed.always_wrap`, as the GPU check does on one GPU) and a
communication hook that counts the reduced buckets."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from subnets.distributed import Distributed
from subnets.models import tiny_model


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def counted_ddp(model: torch.nn.Module) -> tuple[torch.nn.Module, list[int]]:
    """`model` wrapped in DDP by `Distributed(always_wrap=True)`; the list grows by one per reduced bucket."""
    wrapped = Distributed(use_cpu=True, always_wrap=True).wrap(model)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
    calls: list[int] = []

    def hook(state, bucket):
        calls.append(bucket.index())
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    wrapped.register_comm_hook(None, hook)
    return wrapped, calls


def batch(tokenizer, n: int = 8) -> dict[str, torch.Tensor]:
    enc = tokenizer([f"a fine movie number {i}" for i in range(n)], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.arange(n) % 2}


def objectives():
    from subnets.objectives import FreeLB, PerturbationConfig, PGD, RoASTPerturbation
    from subnets.selective import RoseFirstObjective, RoseMasks

    def rose_first(model):
        rose = RoseMasks("first").bind(model.module)
        return RoseFirstObjective(rose, score_examples=2)  # a split batch: two forward passes

    return {"freelb": lambda m: FreeLB(PerturbationConfig(steps=2, lr=0.1, init_mag=0.1, max_norm=0.0, norm="l2")),
            "pgd": lambda m: PGD(PerturbationConfig(steps=2, lr=0.1, init_mag=0.1, max_norm=0.1, norm="l2")),
            "roast": lambda m: RoASTPerturbation(eps=0.1),
            "rose_first": rose_first}


@pytest.mark.parametrize("name", ["freelb", "pgd", "roast", "rose_first"])
def test_a_multi_pass_objective_reduces_each_bucket_once(name, process_group):
    model, tokenizer = tiny_model("bert")
    model.train()
    wrapped, calls = counted_ddp(model)
    objective = objectives()[name](wrapped)
    objective(wrapped, batch(tokenizer), 1.0)
    buckets = len(set(calls))
    assert buckets >= 1
    assert len(calls) == buckets  # each bucket all-reduced once: one reduction for the whole objective
