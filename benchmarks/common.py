"""Shared helpers for ratio benchmarks: timed calls (CUDA-synchronised), interleaved repetitions, medians.

Ratios are measured in one process with the variants interleaved, so that machine noise hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from subnets.precision import autocast

Clock = Callable[[], float]


def timed(fn: Callable[[], object], device: torch.device, clock: Clock = time.perf_counter) -> float:
    """Seconds one call of `fn` takes (the CUDA queue is drained before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - start


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                clock: Clock = time.perf_counter, warmup: int = 1) -> dict[str, list[float]]:
    """Time every variant `repeats` times, round-robin, after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device, clock))
    return times


def print_ratios(times: dict[str, list[float]], baseline: str, targets: dict[str, float] | None = None) -> None:
    """Median time of each variant and its ratio to the baseline's median (with the target, where one is set)."""
    base = statistics.median(times[baseline])
    for name, values in times.items():
        median = statistics.median(values)
        target = (targets or {}).get(name)
        verdict = "" if target is None else f"  target <= {target:.2f}: {'met' if median / base <= target else 'MISSED'}"
        print(f"{name:>24}: median {median * 1000:9.1f} ms  ratio {median / base:5.3f}{verdict}")


def training_step(objective: Callable, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  batch: dict[str, torch.Tensor], device: torch.device,
                  before_step: Callable[[], None] | None = None) -> None:
    """One optimizer step the way the training loop takes it: objective (forward + backward), step, zero_grad."""
    with autocast(device):
        objective(model, batch, 1.0)
    if before_step is not None:
        before_step()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")


def device_from(args: argparse.Namespace) -> torch.device:
    """The device `--device` names; asking for cuda without one is an error (the ratios would be CPU numbers)."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda given but torch sees no CUDA device; expected a GPU machine.")
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def step_parser(description: str) -> argparse.ArgumentParser:
    """The options every step benchmark takes: model, batch size, sequence length, repetitions, device."""
    parser = argparse.ArgumentParser(description=description)
    add_device_option(parser)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    return parser


def random_batch(tokenizer, batch_size: int, seq_len: int, device: torch.device, *,
                 pairs: bool = False) -> dict[str, torch.Tensor]:
    """Random in-vocabulary words (sentence pairs with token_type_ids if `pairs`) padded to `seq_len`, random
    binary labels and example ids."""
    g = torch.Generator().manual_seed(0)
    segments = 2 if pairs else 1
    ids = torch.randint(1000, tokenizer.vocab_size, (batch_size, segments, seq_len // segments - 2), generator=g)
    texts = [[tokenizer.decode(x) for x in ids[:, i]] for i in range(segments)]
    enc = tokenizer(*texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    batch = {**enc, "labels": torch.randint(0, 2, (batch_size,), generator=g), "idx": torch.arange(batch_size)}
    return {k: v.to(device) for k, v in batch.items()}
