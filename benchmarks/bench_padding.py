"""Dynamic padding vs fixed 128-token padding, and the share of a training step spent loading data.

    python benchmarks/bench_padding.py --data_dir DATA [--model minilm --batch_size 32 --repeats 10]

Real SST-2 training batches through the toolkit's own data path (tokenised dataset -> batch reader -> collator)
and a full AdamW step of the model, both variants interleaved in one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, autocast, device_from, interleaved, print_ratios  # noqa: E402

from subnets.data import Collator, batch_reader, load_split, subsample, tokenize  # noqa: E402
from subnets.models import load_classifier  # noqa: E402
from subnets.tasks import get_task  # noqa: E402
from subnets.training import model_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    add_device_option(parser)
    args = parser.parse_args()
    device = device_from(args)
    task = get_task("sst2")
    model, tokenizer = load_classifier(args.model, task.label_names)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    raw = subsample(load_split(task, "train", args.data_dir), args.batch_size * (args.repeats + 1), shuffle=True)
    readers = {name: batch_reader(tokenize(raw, tokenizer, task, 128, pad_to_max_length=fixed), Collator(tokenizer))
               for name, fixed in (("dynamic", False), ("fixed_128", True))}
    rng = np.random.default_rng(0)
    load_times: dict[str, list[float]] = {name: [] for name in readers}
    lengths: list[int] = []

    def step(name: str) -> None:
        indices = rng.choice(len(raw), args.batch_size, replace=False).tolist()
        start = time.perf_counter()
        batch = {k: v.to(device) for k, v in readers[name](indices).items()}
        load_times[name].append(time.perf_counter() - start)
        if name == "dynamic":
            lengths.append(batch["input_ids"].shape[1])
        with autocast(device):
            loss = F.cross_entropy(model(**model_inputs(batch)).logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = interleaved({name: (lambda n=name: step(n)) for name in readers}, args.repeats, device)
    print(f"{args.model}, batch {args.batch_size}, {device}; dynamic batches padded to a median of "
          f"{statistics.median(lengths):.0f} tokens (fixed: 128)")
    print_ratios(times, baseline="dynamic")
    for name in readers:
        share = statistics.median(load_times[name][-args.repeats:]) / statistics.median(times[name])
        print(f"{name:>24}: data loading {100 * share:.2f}% of the step")


if __name__ == "__main__":
    main()
