"""Inference speed-up of a compact export: masked dense model vs physically shrunk model, in one process.

Keeps a fraction of the attention heads and FFN neurons per layer (largest L1 weight norm), builds the masked
model (removed units zeroed, full-size matrices) and the compact export, checks that their logits agree, then
times forward passes of both, alternating between them each repetition, and reports medians and their ratio.

    python benchmarks/bench_compact_export.py                      # minilm, batch 32, seq 128, 50% / 50%
    python benchmarks/bench_compact_export.py --device cuda --dtype bfloat16
    python benchmarks/bench_compact_export.py --model DIR                # any family of docs/families.md

For a model with grouped-query attention, --keep_heads is the fraction of key/value groups kept.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from subnets.export import apply_structured_masks, compact_export
from subnets.masking import magnitude_structured_masks
from subnets.models import load_classifier
from subnets.targets import find_encoder_layers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="model name or path (default: the minilm alias)")
    parser.add_argument("--keep_heads", type=float, default=0.5, help="fraction of heads kept per layer")
    parser.add_argument("--keep_neurons", type=float, default=0.5, help="fraction of FFN neurons kept per layer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15, help="timed repetitions per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16 runs the forward under autocast")
    return parser.parse_args()


def timed_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        model(**inputs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model, _ = load_classifier(args.model, ["neg", "pos"])
    model.eval()
    heads, neurons = magnitude_structured_masks(model, args.keep_heads, args.keep_neurons)
    masked = copy.deepcopy(model)
    apply_structured_masks(masked, heads, neurons)
    compact = compact_export(model, heads, neurons)
    del model
    masked.to(device).eval()
    compact.to(device).eval()

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1000, masked.config.vocab_size, (args.batch_size, args.seq_len), generator=generator)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": torch.ones_like(input_ids, device=device)}

    with torch.inference_mode():
        difference = (masked(**inputs).logits - compact(**inputs).logits).abs().max().item()
        times: dict[str, list[float]] = {"masked": [], "compact": []}
        for rep in range(args.warmup + args.reps):
            for name, net in (("masked", masked), ("compact", compact)) if rep % 2 else (("compact", compact), ("masked", masked)):
                seconds = timed_forward(net, inputs, device, dtype)
                if rep >= args.warmup:
                    times[name].append(seconds)

    params = {name: sum(p.numel() for p in net.parameters()) for name, net in (("masked", masked), ("compact", compact))}
    encoder = {name: sum(p.numel() for block in find_encoder_layers(net) for p in block.parameters())
               for name, net in (("masked", masked), ("compact", compact))}
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"model {args.model}, device {device}, dtype {args.dtype}, batch {args.batch_size} x seq {args.seq_len}, "
          f"kept heads {args.keep_heads:.0%}, kept FFN neurons {args.keep_neurons:.0%}, {args.reps} interleaved reps")
    print(f"max |logit difference| masked vs compact: {difference:.2e}")
    print(f"parameters: masked {params['masked']:,}  compact {params['compact']:,}  "
          f"(encoder layers {encoder['masked']:,} -> {encoder['compact']:,}, x{encoder['compact'] / encoder['masked']:.3f})")
    print(f"median forward: masked {median['masked'] * 1e3:.1f} ms  compact {median['compact'] * 1e3:.1f} ms")
    print(f"speed-up (masked / compact): {median['masked'] / median['compact']:.2f}x")


if __name__ == "__main__":
    main()
