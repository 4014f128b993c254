"""Selective fine-tuning steps vs. their dense counterparts, same model and batch, in one process.

    python benchmarks/bench_selective.py [--model minilm] [--batch_size 32] [--seq_len 64] [--repeats 7]

Ratios (docs/methods.md targets): ROSE-Second step / AdamW step (<= 1.10), ROSE-First step / dense step (<= 2.1;
see docs/selective.md for why the exact KL gradient costs more; `rose_first_score<k>` scores from k examples,
`--rose_score_examples`: B/4 is the default, B/8 cheaper), RoAST step / FreeLB-1 step. A step is the
whole optimizer step: objective (forward and backward passes), the method's per-step hook (RoAST's Fisher
accumulation), optimizer update, zero_grad. The configurations run interleaved (one step each, in turn, after
two warm-up rounds) and the median of each is reported; on CUDA under bf16 autocast with synchronisation
around each timed step only. On CPU the default clock is the process CPU time (`--clock cpu`), which a busy
shared machine distorts far less than wall-clock time; `--clock wall` measures elapsed time instead.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_from, interleaved, print_ratios, random_batch, step_parser, training_step  # noqa: E402

from subnets.models import load_classifier  # noqa: E402
from subnets.objectives import FreeLB, LossObjective, PerturbationConfig, RoASTPerturbation  # noqa: E402
from subnets.selective import RoastAdamW, RoastMasks, RoseAdamW, RoseFirstObjective, RoseMasks  # noqa: E402


def main() -> None:
    parser = step_parser(__doc__.splitlines()[0])
    parser.add_argument("--clock", choices=("cpu", "wall"), default=None,
                        help="cpu: process CPU time (default on CPU); wall: elapsed time (always on CUDA)")
    args = parser.parse_args()

    device = device_from(args)
    clock_name = "wall" if device.type == "cuda" else (args.clock or "cpu")
    clock = time.perf_counter if clock_name == "wall" else time.process_time
    model, tokenizer = load_classifier(args.model, ("negative", "positive"))
    model.to(device).train()
    batch = random_batch(tokenizer, args.batch_size, args.seq_len, device)
    adamw = dict(lr=1e-6, betas=(0.9, 0.98), weight_decay=0.01)

    rose_second = RoseMasks("second", upper=30).bind(model)
    rose_first = RoseMasks("first", upper=60).bind(model)
    default_subset, small_subset = max(1, args.batch_size // 4), max(1, args.batch_size // 8)
    roast = RoastMasks(alpha=0.9, beta=10.0).bind(model)
    roast.fisher.add([torch.rand_like(p) for p in roast.params])
    roast.redraw(epoch=0)
    roast_objective = RoASTPerturbation(eps=0.1, adv_weight=0.5, kl_weight=0.01)
    steps = {
        "dense": (LossObjective(), torch.optim.AdamW(model.parameters(), **adamw), None),
        "rose_second": (LossObjective(), RoseAdamW(model.parameters(), rose=rose_second, **adamw), None),
        "rose_first": (RoseFirstObjective(rose_first), RoseAdamW(model.parameters(), rose=rose_first, **adamw), None),
        **{f"rose_first_score{k}": (RoseFirstObjective(rose_first, score_examples=k),
                                    RoseAdamW(model.parameters(), rose=rose_first, **adamw), None)
           for k in (default_subset, small_subset)},
        "freelb_K1": (FreeLB(PerturbationConfig(1, 0.03, 0.05, 0.0, "l2")),
                      torch.optim.AdamW(model.parameters(), **adamw), None),
        "roast": (roast_objective, RoastAdamW(model.parameters(), roast=roast, **adamw), roast.fisher.add),
    }
    times = interleaved({name: (lambda o=o, opt=opt, hook=hook: training_step(o, model, opt, batch, device, hook))
                         for name, (o, opt, hook) in steps.items()}, args.repeats, device, clock, warmup=2)
    print(f"device={device.type} clock={clock_name} model={args.model} batch={args.batch_size} "
          f"seq_len={args.seq_len} repeats={args.repeats}")
    print_ratios(times, baseline="dense", targets={"rose_second": 1.10, "rose_first": 2.1,
                                                   **{f"rose_first_score{k}": 2.1 for k in (default_subset, small_subset)}})
    print(f"RoAST / FreeLB-1 step: {statistics.median(times['roast']) / statistics.median(times['freelb_K1']):.3f}")

if __name__ == "__main__":
    main()
