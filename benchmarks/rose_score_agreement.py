"""How often ROSE-First's subset score selects the same tensors as the exact score, on a real short run.

    OMP_NUM_THREADS=1 python benchmarks/rose_score_agreement.py --data_dir DATA [--model minilm] [--steps 30]
        [--batch_size 32] [--subsets 2,4,8] [--upper 60]

A ROSE-First run (exact score, `rose_first_sst2`'s band [0, 60]) trains on a fixed SST-2 training sample. Before
each step, on that step's batch and weights, the keep set (tensors with M = 1) is computed by the exact score,
by a second exact score (independent dropout masks: the noise floor of the score itself) and by the subset
score of every k in `--subsets`; then the step is taken with the first exact masks. Per comparison with the
first exact set it prints the mean Jaccard index of the keep sets, the mean share of tensors with the same
decision, and the share of steps with identical sets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, device_from, training_step  # noqa: E402

from subnets.data import Collator, batch_reader, load_split, subsample, tokenize  # noqa: E402
from subnets.models import load_classifier  # noqa: E402
from subnets.selective import RoseAdamW, RoseFirstObjective, RoseMasks  # noqa: E402
from subnets.tasks import get_task  # noqa: E402


def keep_set(objective: RoseFirstObjective, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> set[int]:
    """Indices of the scored tensors the objective's score keeps for `batch` (gradients are left untouched)."""
    objective(model, batch, 1.0)
    model.zero_grad(set_to_none=True)
    masks = objective.rose.compute(None)
    return {i for i, m in enumerate(torch.stack(masks).tolist()) if m == 1.0}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--subsets", default="2,4,8", help="comma-separated subset sizes k to compare")
    parser.add_argument("--upper", type=float, default=60.0)
    parser.add_argument("--lr", type=float, default=2e-5)
    add_device_option(parser)
    args = parser.parse_args()
    device = device_from(args)
    torch.manual_seed(0)

    task = get_task("sst2", trainable=True)
    model, tokenizer = load_classifier(args.model, task.label_names)
    model.to(device).train()
    train = tokenize(subsample(load_split(task, "train", args.data_dir), args.steps * args.batch_size, shuffle=True),
                     tokenizer, task, args.max_seq_length)
    read = batch_reader(train, Collator(tokenizer))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).tolist()

    rose = RoseMasks("first", upper=args.upper).bind(model)
    optimizer = RoseAdamW(model.parameters(), rose=rose, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    exact = RoseFirstObjective(rose)
    cheap = {f"subset k={k}": RoseFirstObjective(rose, score_examples=int(k)) for k in args.subsets.split(",")}
    stats: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in ("exact (redrawn)", *cheap)}
    total = len(rose.params)
    for step in range(args.steps):
        batch = {k: v.to(device) for k, v in read(order[step * args.batch_size:(step + 1) * args.batch_size]).items()}
        reference = keep_set(exact, model, batch)
        for name, objective in (("exact (redrawn)", exact), *cheap.items()):
            other = keep_set(objective, model, batch)
            stats[name].append((jaccard(reference, other), 1 - len(reference ^ other) / total, reference == other))
        training_step(exact, model, optimizer, batch, device)
        latest = ", ".join(f"{name} J={rows[-1][0]:.2f}" for name, rows in stats.items())
        print(f"step {step + 1}/{args.steps}: {latest}", file=sys.stderr, flush=True)
    print(f"model={args.model} task=sst2 steps={args.steps} batch={args.batch_size} band=[0, {args.upper}] "
          f"scored tensors={total}")
    print(f"{'vs exact':>18} | mean Jaccard (keep sets) | same decision | identical sets")
    for name, rows in stats.items():
        print(f"{name:>18} | {statistics.mean(r[0] for r in rows):23.3f} | {statistics.mean(r[1] for r in rows):13.3f} "
              f"| {sum(r[2] for r in rows) / len(rows):14.3f}")


if __name__ == "__main__":
    main()
