"""FreeLB training step (K ascent steps) vs. a dense cross-entropy step, same model and batch.

    python benchmarks/bench_freelb.py [--model minilm] [--batch_size 32] [--seq_len 64] [--repeats 7]

Target (docs/methods.md): FreeLB with K steps <= 1.05 x (K + 1) x dense. Steps are interleaved (dense, K=2, K=3,
K=5, dense, ...) in one process and the median of each is reported; on CUDA under bf16 autocast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_from, interleaved, print_ratios, random_batch, step_parser, training_step  # noqa: E402

from subnets.models import load_classifier  # noqa: E402
from subnets.objectives import FreeLB, LossObjective, PerturbationConfig  # noqa: E402

STEPS = (2, 3, 5)


def main() -> None:
    parser = step_parser(__doc__.splitlines()[0])
    args = parser.parse_args()

    device = device_from(args)
    model, tokenizer = load_classifier(args.model, ("negative", "positive"))
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    batch = random_batch(tokenizer, args.batch_size, args.seq_len, device, pairs=True)
    objectives = {"dense": LossObjective(),
                  **{f"freelb_K{k}": FreeLB(PerturbationConfig(steps=k, lr=0.1, init_mag=0.05)) for k in STEPS}}
    times = interleaved({name: (lambda o=objective: training_step(o, model, optimizer, batch, device))
                         for name, objective in objectives.items()}, args.repeats, device)
    print(f"device={device.type} model={args.model} batch={args.batch_size} seq_len={args.seq_len} "
          f"repeats={args.repeats}")
    print_ratios(times, baseline="dense", targets={f"freelb_K{k}": 1.05 * (k + 1) for k in STEPS})


if __name__ == "__main__":
    main()
