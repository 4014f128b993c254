"""Step-time ratios of mask search and fixed-mask retraining vs. dense fine-tuning (minilm, batch 32, one process).

    python benchmarks/bench_mask_steps.py [--reps 7] [--seq_len 128] [--threads N]

Each repetition times one optimizer step of each variant in turn (interleaved); medians are compared.
Targets (docs/methods.md): hard-concrete search step <= 1.15 x dense, fixed-mask retraining step <= 1.05 x dense.
On a shared machine, compare runs only at a similar load (printed before and after): while another process
holds a core, every multi-threaded op waits for its descheduled worker thread, which swamps the step times
(`--threads 1` avoids that wait).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, autocast, device_from, interleaved, print_ratios  # noqa: E402

from subnets.masking import FixedMask, attach_hard_concrete, mean_expected_l0, random_mask  # noqa: E402
from subnets.models import load_classifier  # noqa: E402
from subnets.targets import find_targets  # noqa: E402


def make_variant(kind: str, batch: dict[str, torch.Tensor], device: torch.device):
    model, _ = load_classifier("minilm", ["negative", "positive"])
    model.to(device).train()
    targets = find_targets(model, pooler=True)
    fixed = gates = None
    if kind == "hard_concrete":
        gates = attach_hard_concrete(model, targets)
        params = [g.log_alpha for g in gates.values()]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        if kind == "fixed_mask":
            fixed = FixedMask(model, random_mask(targets, 0.5))
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)

    def step() -> None:
        with autocast(device):
            loss = model(**batch).loss
        if gates is not None:
            loss = loss + 0.1 * mean_expected_l0(gates)
        loss.backward()
        if fixed is not None:
            fixed.zero_grads()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if fixed is not None:
            fixed.zero_weights()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    add_device_option(parser)
    args = parser.parse_args()
    device = device_from(args)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device: {device}, threads: {torch.get_num_threads()}, load average before: {os.getloadavg()[0]:.2f}")
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch_size, args.seq_len)),
             "attention_mask": torch.ones(args.batch_size, args.seq_len, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch_size,))}
    batch = {k: v.to(device) for k, v in batch.items()}
    variants = {k: make_variant(k, batch, device) for k in ("dense", "hard_concrete", "fixed_mask")}
    times = interleaved(variants, args.reps, device)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print_ratios(times, baseline="dense", targets={"hard_concrete": 1.15, "fixed_mask": 1.05})

if __name__ == "__main__":
    main()
