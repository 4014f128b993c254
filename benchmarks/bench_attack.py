"""Benchmark: per recipe, the share of attack wall time in model forwards, in USE and in POS tagging, and queries/s.

    python benchmarks/bench_attack.py --data_dir DATA [--checkpoint DIR] [--examples 100] [--repeats 3] \
        [--recipes textfooler,pwws,textbugger,bae] [--attack_batch_size 1,8]

Without --checkpoint, `minilm` is first fine-tuned briefly on SST-2 (150 steps of 32) so that the attack
meets a real decision boundary (a random head would be attacked trivially or not at all). The attack then runs
`--repeats` times over the same SST-2 dev sentences; medians over the repetitions are printed:
* forward share: seconds inside `HFClassifier` forwards (incl. the host copy) / attack wall time;
* prepare share: seconds tokenising and padding / attack wall time;
* USE share / POS share: seconds encoding windows with the Universal Sentence Encoder / tagging with spaCy;
* queries per second: TextAttack-counted queries (every text sent to the goal function) / attack wall time;
* queries per CPU second: the same per second of this process's CPU time (steadier on a shared machine).
Each recipe runs once per `--attack_batch_size` (examples attacked together, `run_attack(batch_size=...)`), the
repetitions interleaved; the last line per recipe says whether every per-example result equals that of the first
batch size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_device_option, device_from  # noqa: E402

from subnets.attacks import ATTACKS, HFClassifier, build_attack, run_attack, summarize  # noqa: E402
from subnets.attacks.recipes import shared_encoder, shared_tagger  # noqa: E402
from subnets.data import load_split  # noqa: E402
from subnets.models import load_classifier  # noqa: E402
from subnets.tasks import get_task  # noqa: E402


def finetune_briefly(data_dir: str, steps: int, batch_size: int, seed: int, device: torch.device):
    task = get_task("sst2")
    model, tokenizer = load_classifier("minilm", task.label_names, fresh_head=True)
    train = load_split(task, "train", data_dir).shuffle(seed=seed).select(range(steps * batch_size))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    torch.manual_seed(seed)
    for step in range(steps):
        rows = train[step * batch_size:(step + 1) * batch_size]
        batch = tokenizer(rows["sentence"], padding=True, truncation=True, max_length=64,
                          return_tensors="pt").to(device)
        loss = model(**batch, labels=torch.tensor(rows["label"], device=device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 50 == 0:
            print(f"fine-tune step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    return model.eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--checkpoint", help="a fine-tuned SST-2 checkpoint; default: fine-tune minilm here")
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--finetune_steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, help="rows per model forward (default: the device's, wrapper.py)")
    parser.add_argument("--attack_batch_size", default="1,8", help="comma-separated examples attacked together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default=",".join(ATTACKS))
    add_device_option(parser)
    args = parser.parse_args()
    device = device_from(args)

    task = get_task("sst2")
    start = time.perf_counter()
    if args.checkpoint:
        model, tokenizer = load_classifier(args.checkpoint, task.label_names)
    else:
        model, tokenizer = finetune_briefly(args.data_dir, args.finetune_steps, 32, args.seed, device)
    print(f"model ready in {time.perf_counter() - start:.1f}s (device: {device})")
    dev = load_split(task, "validation", args.data_dir).select(range(args.examples))
    examples = [(r["idx"], (r["sentence"],), r["label"]) for r in dev]

    for recipe in args.recipes.split(","):
        bench_recipe(recipe, model, tokenizer, examples, args)


def bench_recipe(recipe: str, model, tokenizer, examples, args) -> None:
    sizes = [int(n) for n in args.attack_batch_size.split(",")]
    measured: dict[int, dict[str, list[float]]] = {n: {} for n in sizes}
    records: dict[int, list[dict]] = {}
    for _ in range(args.repeats):
        for n in sizes:
            classifier = HFClassifier(model, tokenizer, batch_size=args.batch_size, device=device_from(args))
            attack = build_attack(recipe, classifier, data_dir=args.data_dir, seed=args.seed)
            use_before, pos_before = shared_encoder().seconds, shared_tagger().seconds
            begin, cpu_begin = time.perf_counter(), time.process_time()
            results = run_attack(attack, examples, batch_size=n)
            wall, cpu = time.perf_counter() - begin, time.process_time() - cpu_begin
            for key, value in (("wall", wall), ("cpu", cpu), ("cpu_queries", sum(r.queries for r in results) / cpu),
                               ("forward", classifier.stats.model_seconds / wall),
                               ("prepare", classifier.stats.tokenize_seconds / wall),
                               ("use", (shared_encoder().seconds - use_before) / wall),
                               ("pos", (shared_tagger().seconds - pos_before) / wall),
                               ("queries", sum(r.queries for r in results) / wall),
                               ("examples", len(results) / wall), ("calls", classifier.stats.calls)):
                measured[n].setdefault(key, []).append(value)
            records[n] = [r.to_json() for r in results]
    summary = summarize(results)
    print(f"[{recipe}] examples {len(examples)}, repeats {args.repeats}, rows per forward {classifier.batch_size}: "
          f"Clean {100 * summary['clean_accuracy']:.1f}% Aua {100 * summary['accuracy_under_attack']:.1f}% "
          f"Suc {100 * summary['attack_success_rate']:.1f}% avg queries {summary['avg_queries']:.1f}")
    for n, m in measured.items():
        median = {key: statistics.median(values) for key, values in m.items()}
        print(f"[{recipe}] attack batch {n}: median wall {median['wall']:.2f}s, process CPU {median['cpu']:.2f}s, "
              f"model calls {median['calls']:.0f}, queries per CPU second {median['cpu_queries']:.1f}, "
              f"forward share {median['forward']:.3f}, prepare share {median['prepare']:.3f}, "
              f"USE share {median['use']:.3f}, POS share {median['pos']:.3f}, queries/s {median['queries']:.1f}, "
              f"examples/s {median['examples']:.2f}")
    same = all(records[n] == records[sizes[0]] for n in sizes)
    print(f"[{recipe}] per-example results identical for attack batch sizes {args.attack_batch_size}: {same}")


if __name__ == "__main__":
    main()
