"""Sweep a grid of options over a chain of stages, skip finished runs, resume interrupted ones, aggregate seeds.

    python -m subnets.pipelines.sweep --stages stage1,stage2,stage3,evaluate --output_dir runs/sweep \
        --grid seed=1,2,3 sparsity=0.3,0.5 \
        --set task_name=sst2 data_dir=DATA stage2.method=hard_concrete stage3.init=pretrained evaluate.tasks=sst2 \
        --executor local --workers 2

Each run gets its own directory `<output_dir>/<stage>/<options>-<hash>`; `<output_dir>/results.md` and
`results.json` hold mean ± sd over `--aggregate_over` (default seed) per grid cell, with every cell's runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from subnets.pipelines.common import run_cli
from subnets.pipelines.sweeping.aggregate import aggregate, leaf_records, markdown
from subnets.pipelines.sweeping.execute import EXECUTORS, SweepSettings, run_plan
from subnets.pipelines.sweeping.plan import Chain, Plan, parse_assignment
from subnets.pipelines.sweeping.stages import STAGES, get_stage
from subnets.errors import SubnetsError
from subnets.io import atomic_write_json, atomic_write_text


def _typed(value: str) -> Any:
    """A submitit parameter value: int or float where it reads as one, else the string."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_chain(stages: str, grid: Sequence[str], fixed: Sequence[str]) -> Chain:
    """`--stages a,b`, `--grid key=v1,v2 ...`, `--set [stage.]key=value ...` -> a Chain."""
    options: dict[str, dict[str, Any]] = {}
    for text in fixed:
        key, value = parse_assignment(text)
        stage, dot, option = key.rpartition(".")
        options.setdefault(stage if dot else "*", {})[option] = value
    grid_values = {}
    for text in grid:
        key, values = parse_assignment(text)
        if key in grid_values:
            raise SubnetsError(f"Grid key '{key}' is given twice; expected each key once with all its values.")
        grid_values[key] = [v for v in values.split(",") if v]
    return Chain([s for s in stages.split(",") if s], options, grid_values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", required=True, help=f"Comma-separated chain: {','.join(STAGES)}.")
    parser.add_argument("--grid", nargs="*", default=[], metavar="KEY=V1,V2",
                        help="Grid values; KEY is an option (every stage that takes it) or STAGE.OPTION.")
    parser.add_argument("--set", nargs="*", default=[], dest="fixed", metavar="KEY=VALUE",
                        help="Fixed options; KEY is an option (every stage that takes it) or STAGE.OPTION.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--executor", default="local", choices=EXECUTORS)
    parser.add_argument("--workers", type=int, default=1, help="Runs at once (local: worker processes).")
    parser.add_argument("--threads_per_worker", type=int, default=None,
                        help="Intra-op threads per run (default: cores // workers; cores = $OMP_NUM_THREADS or all).")
    parser.add_argument("--nproc_per_run", type=int, default=1, help="Launch each run under torchrun with N processes.")
    parser.add_argument("--submitit_cluster", default=None, help="submitit cluster: slurm, local, debug (default: auto).")
    parser.add_argument("--submitit_param", nargs="*", default=[], metavar="KEY=VALUE",
                        help="submitit executor parameters (timeout_min=60 slurm_partition=gpu gpus_per_node=1 ...).")
    parser.add_argument("--aggregate_over", default="seed", help="Grid key averaged over in the results.")
    parser.add_argument("--metrics", default=None, help="Comma-separated metric keys for results.md (default: eval_*).")
    parser.add_argument("--dry_run", action="store_true", help="List the runs and their commands, run nothing.")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    plan = Plan(out)
    plan.add(parse_chain(args.stages, args.grid, args.fixed))
    if args.dry_run:
        for run in plan.ordered():
            print(f"{run.name}: python -m {get_stage(run.stage).module} {' '.join(run.argv)}")
        return {"runs": [r.name for r in plan.ordered()]}
    settings = SweepSettings(args.executor, args.workers, args.threads_per_worker, args.nproc_per_run,
                             args.submitit_cluster,
                             {k: _typed(v) for k, v in map(parse_assignment, args.submitit_param)})
    outcomes = run_plan(plan, settings)
    cells = aggregate(leaf_records(plan.leaves, out), over=args.aggregate_over)
    atomic_write_json(out / "results.json", cells)
    table = markdown(cells, args.metrics.split(",") if args.metrics else None, over=args.aggregate_over)
    atomic_write_text(out / "results.md", table)
    print(table)
    failed = {name: o for name, o in outcomes.items() if o["status"] in ("failed", "blocked")}
    for name, outcome in failed.items():
        print(f"{outcome['status']}: {name}: {outcome.get('error') or outcome.get('reason')}")
    return {"outcomes": outcomes, "cells": cells}


def require_success(outcomes: dict[str, dict[str, Any]]) -> None:
    """One error listing the runs that failed or were blocked, so that the command exits non-zero (after its
    results and report are written)."""
    bad = [f"{name} ({o['status']})" for name, o in outcomes.items() if o["status"] in ("failed", "blocked")]
    if bad:
        raise SubnetsError(f"{len(bad)} of {len(outcomes)} runs failed or were blocked: {', '.join(bad)}; see "
                           f"sweep_status.json in the output directory.")


def cli() -> int:
    return run_cli(lambda argv: require_success(main(argv).get("outcomes", {})))


if __name__ == "__main__":
    raise SystemExit(cli())
