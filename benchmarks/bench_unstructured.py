"""What an unstructured ticket buys at inference: disk size, not speed, on dense kernels.

Prunes a fraction of every encoder matrix by magnitude (the ticket stage 3 retrains), makes the zeros permanent
in a plain model, and times forward passes of the dense and the pruned model, interleaved, in one process. Then
writes both as checkpoints (dense safetensors vs the sparse-aware format of `subnets.masks.checkpoint`) and compares
their sizes. Compare benchmarks/bench_compact_export.py, where removing whole heads and neurons does speed up.

    OMP_NUM_THREADS=1 python benchmarks/bench_unstructured.py      # minilm, batch 32 x seq 128, 50% sparsity
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved  # noqa: E402

from subnets.masks.checkpoint import save_sparse_checkpoint  # noqa: E402
from subnets.masking import magnitude_mask  # noqa: E402
from subnets.models import load_classifier  # noqa: E402
from subnets.weights import apply_masks, save_plain_model  # noqa: E402
from subnets.targets import find_targets  # noqa: E402


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--sparsity", type=float, default=0.5, help="fraction of every encoder matrix pruned")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dense, tokenizer = load_classifier(args.model, ["neg", "pos"])
    dense.eval()
    pruned = copy.deepcopy(dense)
    ticket = magnitude_mask(pruned, find_targets(pruned), args.sparsity)
    apply_masks(pruned, ticket)
    with tempfile.TemporaryDirectory() as tmp:
        save_plain_model(pruned, tokenizer, Path(tmp) / "pruned")  # the zeros made permanent, no hooks
        pruned = type(dense).from_pretrained(Path(tmp) / "pruned").eval()
        save_plain_model(dense, tokenizer, Path(tmp) / "dense")
        save_sparse_checkpoint(pruned, ticket, Path(tmp) / "sparse", tokenizer=tokenizer)
        sizes = {name: directory_bytes(Path(tmp) / name) for name in ("dense", "sparse")}
    dense.to(device)
    pruned.to(device)
    ids = torch.randint(1000, dense.config.vocab_size, (args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(0)).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        times = interleaved({"dense": lambda: dense(**inputs), "pruned": lambda: pruned(**inputs)}, args.reps, device,
                            warmup=2)
    median = {name: statistics.median(values) for name, values in times.items()}
    zeros = sum(int((~m).sum()) for m in ticket.values()) / sum(m.numel() for m in ticket.values())
    print(f"model {args.model}, device {device}, batch {args.batch_size} x seq {args.seq_len}, "
          f"{zeros:.1%} of the encoder matrices pruned (unstructured, magnitude), {args.reps} interleaved reps")
    print(f"median forward: dense {median['dense'] * 1e3:.1f} ms  pruned {median['pruned'] * 1e3:.1f} ms  "
          f"speed-up {median['dense'] / median['pruned']:.2f}x")
    print(f"checkpoint: dense {sizes['dense'] / 2**20:.1f} MiB  sparse-aware {sizes['sparse'] / 2**20:.1f} MiB  "
          f"(x{sizes['sparse'] / sizes['dense']:.2f})")


if __name__ == "__main__":
    main()
