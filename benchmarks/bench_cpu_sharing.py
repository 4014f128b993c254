"""A stage's training steps alone and beside CPU-bound processes, with the old and the new thread set-up.

    python benchmarks/bench_cpu_sharing.py [--model minilm] [--steps 30] [--repeats 3] [--busy 0,1,2]

Each thread set-up runs in its own worker process (libgomp reads its wait policy once, when torch loads, so
set-ups cannot share a process), holding a model and a batch and timing `--steps` stage-1 steps (CE forward,
backward, AdamW step) in wall-clock time whenever this process asks. This process starts the busy-loop
processes of each load level itself, asks every worker in turn (interleaved, order rotated each round) and
stops them again; it reports the median time per step of each set-up and load, and its ratio to the same
set-up alone. Set-ups:

* `before`: torch's defaults (one thread per core, libgomp's spinning wait), as stages ran until now;
* `after`: what a stage now does (`subnets.threads`: passive wait, threads = usable cores);
* `after_1t`: the same with `--num_threads 1`, what a runner giving each worker one core passes.

OMP_NUM_THREADS, OMP_WAIT_POLICY and GOMP_SPINCOUNT are removed from the workers' environment. On a 2-core
machine the fair ratios are 2x beside one busy process (one core of two is lost) and 3x beside two (a third of
the machine is left); the ratio of a 1-thread set-up is bounded by its share of a core instead. Background load
from other users distorts every number: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETUPS = {"before": None, "after": "auto", "after_1t": "1"}  # set-up -> worker --num_threads (None: torch default)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")


def worker(args: argparse.Namespace) -> None:
    """Serve timing requests on stdin: each line 'run' answers with the seconds of `args.steps` steps."""
    if args.num_threads is not None:  # the new set-up: exactly what a stage does, before torch loads
        from subnets.threads import prefer_passive_wait
        prefer_passive_wait()
    import torch

    sys.path.insert(0, str(HERE))
    from common import random_batch, training_step

    from subnets.models import load_classifier
    from subnets.threads import configure_threads
    from subnets.training import CrossEntropyObjective

    if args.num_threads is not None:
        configure_threads(None if args.num_threads == "auto" else int(args.num_threads))
    torch.manual_seed(0)
    device = torch.device("cpu")
    model, tokenizer = load_classifier(args.model, ("negative", "positive"))
    model.train()
    batch = random_batch(tokenizer, args.batch_size, args.seq_len, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    objective = CrossEntropyObjective()

    def steps(n: int) -> None:
        for _ in range(n):
            training_step(objective, model, optimizer, batch, device)

    steps(3)  # warm-up
    print(f"ready {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        steps(args.steps)
        print(time.perf_counter() - start, flush=True)


class Worker:
    def __init__(self, setup: str, args: argparse.Namespace):
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))  # this checkout
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", args.model,
                   "--steps", str(args.steps), "--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len)]
        if SETUPS[setup] is not None:
            command += ["--num_threads", SETUPS[setup]]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=HERE.parent)
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit(f"error: the '{setup}' worker did not start (see its messages above).")
        self.threads = int(ready[1])

    def time_steps(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def busy_processes(n: int) -> list[subprocess.Popen]:
    """`n` CPU-bound processes (a pure-Python busy loop each)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", default="0,1,2", help="comma-separated numbers of busy processes beside the stage")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {', '.join(SETUPS)}")
    parser.add_argument("--device", choices=("cpu",), default="cpu", help="CPU only: this measures CPU sharing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num_threads", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    setups = args.setups.split(",")
    if unknown := [s for s in setups if s not in SETUPS]:
        raise SystemExit(f"error: unknown set-up '{unknown[0]}'; expected some of {', '.join(SETUPS)}.")
    loads = [int(n) for n in args.busy.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"usable cores {len(os.sched_getaffinity(0))}", flush=True)
    workers = {setup: Worker(setup, args) for setup in setups}
    times: dict[tuple[str, int], list[float]] = {(s, n): [] for s in setups for n in loads}
    try:
        for round_ in range(args.repeats):
            for n in loads:
                busy = busy_processes(n)
                try:
                    time.sleep(0.5)
                    order = setups[round_ % len(setups):] + setups[:round_ % len(setups)]
                    for setup in order:
                        times[setup, n].append(workers[setup].time_steps() / args.steps)
                        print(f"round {round_ + 1}, beside {n}: {setup} {times[setup, n][-1]:.3f} s/step",
                              file=sys.stderr, flush=True)
                finally:
                    stop(busy)
    finally:
        for w in workers.values():
            w.close()
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"model={args.model} batch={args.batch_size} seq_len={args.seq_len} {args.steps} steps x {args.repeats} "
          f"rounds; medians; ratio = time per step / same set-up alone")
    header = " | ".join(f"beside {n}: s/step (ratio)" for n in loads)
    print(f"| set-up | threads | {header} | first column / {setups[0]}'s |")
    print("|---|---:|" + "---:|" * (len(loads) + 1))
    first = statistics.median(times[setups[0], loads[0]])
    for setup in setups:
        alone = statistics.median(times[setup, loads[0]])
        medians = [statistics.median(times[setup, n]) for n in loads]
        cells = " | ".join(f"{m:.3f} ({m / alone:.2f}x)" for m in medians)
        print(f"| {setup} | {workers[setup].threads} | {cells} | {alone / first:.2f} |")


if __name__ == "__main__":
    main()
