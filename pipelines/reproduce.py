"""Reproduce a paper's headline tables with one command: seeded runs through the sweep runner, the paper's numbers
beside ours (mean ± sd over seeds), every cell traceable to its run directories.

    python -m subnets.pipelines.reproduce robust_tickets --budget cpu --seeds 1 2 3 --data_dir DATA --output_dir runs/rt

Writes `<output_dir>/report.md`, `results.json` ({table: {row: {column: {mean, sd, n, paper, runs}}}}) and one
PNG per plotted table; with --tuning, instead, the cpu budget's hand-chosen settings are chosen again on held-out
training rows (pipelines/tuning.py: tuning.md, tuning.json). Budgets: smoke (tiny random model on toy data,
seconds; used by the tests), cpu (minilm, about 2 hours on 2 CPU cores), paper (the paper's model and schedule).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from subnets.pipelines.common import run_cli
from subnets.pipelines.evaluate import PREDICTIONS_DIR
from subnets.pipelines.papers import BUDGETS, Paper, Setting, Table
from subnets.pipelines.sweep import require_success
from subnets.pipelines.sweeping.aggregate import flat_metrics, format_mean_sd, mean_sd
from subnets.pipelines.sweeping.execute import (COMPUTE_FILE, EXECUTORS, RECORD_FILE, SweepSettings, is_finished,
                                               run_plan)
from subnets.pipelines.sweeping.plan import Leaf, Plan
from subnets.pipelines.tuning import tuning_plan, tuning_report
from subnets.attacks.recipes import RECIPES
from subnets.attacks.runner import read_results
from subnets.attacks.search import FAILED, SKIPPED
from subnets.data import default_data_dir
from subnets.errors import SubnetsError
from subnets.extras import require
from subnets.intervals import SAMPLES, cluster_bootstrap, paired_difference, verdict
from subnets.io import atomic_dir, atomic_write_json, atomic_write_text
from subnets.runs import ATTACKS_DIR, METRICS_FILE, PREDICTIONS_DIR

GENERATED_MARKER = ".complete"  # written last into the smoke budget's generated model and data folders
PAPERS = ("robust_tickets", "srnets", "rose", "roast", "pruning_robustness")
# Options every training stage of a budget shares (the smoke budget trains a handful of steps on toy data)
TRAIN = {"smoke": {"max_steps": 2, "per_device_train_batch_size": 16, "max_seq_length": 32, "logging_steps": 1},
         "cpu": {"max_train_samples": 4000, "max_seq_length": 64, "per_device_train_batch_size": 32,
                 "warmup_ratio": 0.1},
         "paper": {}}
TUNING_SPLIT = 10  # --tuning's default --validation_split_percentage: the held-out training rows trials score on
EVALUATE = {"smoke": {"attack_samples": 4, "max_seq_length": 32}, "cpu": {"attack_samples": 200, "max_seq_length": 64},
            "paper": {}}


def load_paper(name: str) -> Paper:
    if name not in PAPERS:
        raise SubnetsError(f"Unknown paper '{name}'; expected one of {', '.join(PAPERS)}.")
    return importlib.import_module(f"subnets.pipelines.papers.{name}").PAPER


def smoke_inputs(paper: Paper, out: Path) -> tuple[str, str]:
    """A tiny random model (per label count of the paper's tasks it is re-headed by the stages) and toy data."""
    from subnets.models import tiny_model
    from subnets.toydata import write_toy_data

    def save_model(directory: Path) -> None:
        model, tokenizer = tiny_model("bert")
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    model_dir, data_dir = out / "smoke_model", out / "smoke_data"
    generate_once(model_dir, save_model)
    generate_once(data_dir, lambda directory: write_toy_data(directory, paper.tasks))
    return str(model_dir), str(data_dir)


def generate_once(directory: Path, write: Callable[[Path], None]) -> None:
    """`write` a generated input folder unless it is complete: it is written into a temporary folder, marked
    complete and renamed into place, so a generation killed midway is redone by the next command."""
    if (directory / GENERATED_MARKER).is_file():
        return
    with atomic_dir(directory) as tmp:
        write(tmp)
        (tmp / GENERATED_MARKER).touch()


def choose_tasks(paper: Paper, budget: str, requested: Sequence[str] | None) -> tuple[str, ...]:
    """The tasks whose tables are built: `requested` (each one the paper reports) or the budget's."""
    reported = paper.budget_tasks["paper"]
    unknown = [t for t in requested or () if t not in reported]
    if unknown:
        raise SubnetsError(f"--tasks {' '.join(unknown)}: not a task of {paper.name}; expected some of "
                           f"{', '.join(reported)}.")
    return tuple(requested or paper.budget_tasks[budget])


def matches(point: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    return all(k not in point or str(point[k]) == str(v) for k, v in where.items())


def example_outcomes(run: Path, key: str) -> dict[int, float] | None:
    """Per example of an evaluate run, the outcome whose mean is metric `key` (`<set>/<metric>`): correct
    (eval_accuracy, from evaluate's predictions/), correct before the attack (clean_accuracy) or held under it
    (accuracy_under_attack), from the attack's JSONL; None for any other metric or where the files are missing."""
    name, _, metric = key.rpartition("/")
    if metric == "eval_accuracy":
        files = sorted(run.glob(f"{PREDICTIONS_DIR}/**/{name}.json"))
        if not files:
            return None
        record = json.loads(files[0].read_text())
        return {i: float(p == g) for i, (p, g) in enumerate(zip(record["prediction"], record["label"]))}
    if metric not in ("clean_accuracy", "accuracy_under_attack"):
        return None
    results = [r for f in sorted(run.glob(f"{ATTACKS_DIR}/**/{name}_*.jsonl")) for r in read_results(f)]
    if metric == "clean_accuracy":
        return {r.idx: float(r.status != SKIPPED) for r in results} or None
    return {r.idx: float(r.status == FAILED) for r in results} or None


@functools.lru_cache(maxsize=8)
def longest_list(path: str) -> int | None:
    """The most neighbours any word has in a shipped neighbour-list file (None where it cannot be read here)."""
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return max((len(v) for v in table.values()), default=0) if isinstance(table, dict) else None


def attack_as_run(run: Path, key: str) -> str | None:
    """For an attack metric (`<set>/accuracy_under_attack`), how the run's attack drew its substitution candidates
    and how that differs from the published recipe (from metrics.json's attack_config); None for other metrics."""
    name, _, metric = key.rpartition("/")
    path = run / METRICS_FILE
    if metric != "accuracy_under_attack" or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    config = next(iter(metrics.values()), {}).get(name, {}).get("attack_config") if metrics else None
    if not config:
        return None
    candidates, published = config["candidates"], RECIPES[config["recipe"]].max_candidates
    if "max_candidates" not in candidates:  # PWWS: WordNet synonyms, no neighbour count
        return "WordNet synonyms (as published)"
    k = candidates["max_candidates"]
    if candidates["source"] != "shipped_lists":
        return f"counter-fitted vectors, {k} nearest" + (" (as published)" if k == published else
                                                         f" (published: {published})")
    longest = longest_list(candidates["path"])
    held = f"at most {min(k, longest)}" if longest is not None else f"up to {k}"
    return f"shipped neighbour lists, {held} per word (published: the {published} nearest counter-fitted vectors)"


def scaled(stat: Mapping[str, Any], scale: float) -> dict[str, Any]:
    return {**stat, **{k: scale * stat[k] for k in ("mean", "low", "high")}}


def collect(table: Table, leaves: Mapping[str, list[Leaf]], out: Path, numbers: Mapping[str, Any]) -> dict:
    """{row: {column: {mean, sd, n, paper, runs, interval, paired}}} from the rows' leaf runs (metrics.json read
    here); `interval`: the 95% interval over seeds and examples, `paired`: the difference from the table's baseline
    row on the same examples (subnets.intervals), where per-example outcomes exist."""
    result: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, dict[str, dict[Any, dict[int, float]]]] = {}
    for row in table.rows:
        cells = {}
        for column in table.columns:
            runs, values, per_seed, attack = [], [], {}, None
            for leaf in leaves.get(row.name, []):
                if not (matches(leaf.point, row.where) and matches(leaf.point, column.where)):
                    continue
                path = out / leaf.run.name / METRICS_FILE
                value = flat_metrics(json.loads(path.read_text())).get(column.key) if path.is_file() else None
                if value is not None:
                    runs.append(leaf.run.name)
                    values.append(column.scale * value)
                    found = example_outcomes(out / leaf.run.name, column.key)
                    if found:
                        per_seed[leaf.point.get("seed")] = found
                    attack = attack or attack_as_run(out / leaf.run.name, column.key)
            stat = mean_sd(values) if values else {"mean": None, "sd": None, "n": 0}
            interval = scaled(cluster_bootstrap([list(found.values()) for found in per_seed.values()]),
                              column.scale) if per_seed else None
            cells[column.name] = {**stat, "paper": numbers.get(table.name, {}).get(row.name, {}).get(column.name),
                                  "runs": runs, "interval": interval, "attack": attack}
            outcomes.setdefault(row.name, {})[column.name] = per_seed
        result[row.name] = cells
    for row, cells in result.items():
        for column in table.columns:
            def versus(other: str) -> dict[str, Any] | None:
                stat = paired_difference(outcomes[row][column.name], outcomes[other][column.name])
                return scaled(stat, column.scale) | {"verdict": verdict(stat)} if stat else None

            cells[column.name]["paired"] = versus(table.baseline) if table.baseline not in (None, row) else None
            others = [other for first, other in table.comparisons if first == row]
            if others:
                cells[column.name]["versus"] = {other: versus(other) for other in others}
    return result


def failed_runs(outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One report line per failed or blocked run."""
    return [f"- {name}: {o['status']} ({o.get('error') or o.get('reason')})"
            for name, o in outcomes.items() if o["status"] in ("failed", "blocked")]


def code_commit() -> str:
    """The git commit of the code running (with "+ uncommitted changes" where the tree differs), or "unknown"."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def argv_options(argv: Sequence[str]) -> dict[str, str]:
    """{--option: its value tokens joined by spaces} of a stage's argv."""
    options: dict[str, list[str]] = {}
    current = None
    for token in argv:
        if token.startswith("--"):
            current = token
            options[current] = []
        elif current is not None:
            options[current].append(token)
    return {k: " ".join(v) for k, v in options.items()}


def check_recorded_runs(plan: Plan) -> None:
    """Refuse (before anything is written) run folders of the output folder that hold a finished run whose
    recorded settings are not what the current code plans: a planned run's folder recording other arguments, or
    an unplanned folder with the readable name (stage and naming options) of a planned run; name each one and
    the options that differ from the closest planned run."""
    planned: dict[str, list[Any]] = {}
    for run in plan.runs.values():
        planned.setdefault(run.name.rpartition("-")[0], []).append(run)
    problems = []
    for record in sorted(plan.output_dir.glob(f"*/*/{RECORD_FILE}")):
        name = str(record.parent.relative_to(plan.output_dir))
        try:
            recorded = json.loads(record.read_text())
        except json.JSONDecodeError:
            continue
        run = plan.runs.get(name)
        if run is not None and recorded == run.record():
            continue
        candidates = [run] if run is not None else planned.get(name.rpartition("-")[0], [])
        if not candidates:
            continue  # another seed, task or stage than these: not part of this report
        ours = argv_options(recorded.get("argv", []))

        def differences(other: Any) -> list[str]:
            theirs = argv_options(other.argv)
            return [f"{k} {ours.get(k, '(unset)')} (planned: {theirs.get(k, '(unset)')})"
                    for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]

        problems.append(f"{name}: " + "; ".join(min((differences(c) for c in candidates), key=len)))
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise SubnetsError(f"--report_only: {len(problems)} finished run(s) in {plan.output_dir} were run with "
                           f"settings the current code does not plan; expected runs of this code (run the command "
                           f"without --report_only in a new --output_dir to rebuild them):\n  {shown}")


def compute_summary(plan: Plan) -> dict[str, dict[str, Any]]:
    """{run name: {stage, argv, seconds, device, threads}} of every finished planned run (provenance.json)."""
    found = {}
    for run in plan.ordered():
        directory = plan.directory(run)
        if is_finished(directory, run):
            compute = directory / COMPUTE_FILE
            found[run.name] = {"stage": run.stage, "argv": list(run.argv),
                               **(json.loads(compute.read_text()) if compute.is_file() else {})}
    return found


def markdown_table(table: Table, result: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> str:
    header = ["method"] + [f"{c.name} {who}" for c in table.columns for who in ("(paper)", "(ours)")]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    implemented = {row.name for row in table.rows if row.chains()}
    for row, cells in result.items():
        values = []
        for column in table.columns:
            cell = cells[column.name]
            values.append("n/a" if cell["paper"] is None else str(cell["paper"]))  # as the paper prints it
            if cell["n"]:
                interval = cell.get("interval")
                shown = f" [{interval['low']:.1f}, {interval['high']:.1f}]" if interval else ""
                values.append(f"{format_mean_sd(cell)}{shown} (n={cell['n']})")
            else:
                values.append("-" if row in implemented else "n/a")
        lines.append(f"| {row} | " + " | ".join(values) + " |")
    attacks = {c.name: next((cells[c.name]["attack"] for cells in result.values() if cells[c.name].get("attack")),
                            None) for c in table.columns}
    if any(attacks.values()):  # every Aua carries how its attack differs from the published one
        lines.append("| attack as run | " + " | ".join(f" | {attacks[c.name] or ''}" for c in table.columns) + " |")
    return f"### {table.title}\n\nSeeds {' '.join(map(str, seeds))}; ours = mean ± sd over seeds [95% interval over " \
        f"seeds and examples, where per-example outcomes exist].\n\n" + "\n".join(lines) + "\n"


def bound(value: float) -> str:
    """An interval bound in points: one decimal, except that a nonzero bound that would print as 0.0 keeps its
    first significant digit, so that "shown" never sits beside an interval that reads [-2.4, -0.0]."""
    return f"{value:+.1f}" if value == 0 or abs(value) >= 0.05 else f"{value:+.1g}"


def paired_table(table: Table, result: Mapping[str, Mapping[str, Any]]) -> str:
    """Each row minus the table's baseline, then each of its `comparisons` (row minus other row), on the same
    examples (same seed): mean difference, 95% interval over seeds and examples, and "shown" where the interval
    excludes zero, "a hint" otherwise."""
    def stat(row: str, other: str, column: str) -> dict[str, Any] | None:
        cell = result[row][column]
        return cell.get("paired") if other == table.baseline else cell.get("versus", {}).get(other)

    sections = [(f"Paired differences from {table.baseline}",
                 [(row, table.baseline, row) for row in result if table.baseline not in (None, row)]),
                ("Paired differences between rows", [(a, b, f"{a} - {b}") for a, b in table.comparisons])]
    parts = []
    for heading, pairs in sections:
        columns = [c.name for c in table.columns if any(stat(a, b, c.name) for a, b, _ in pairs)]
        if not columns:
            continue
        lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for a, b, label in pairs:
            texts = [f"{p['mean']:+.1f} [{bound(p['low'])}, {bound(p['high'])}] {p['verdict']} ({p['examples']} pairs)"
                     if (p := stat(a, b, name)) else "-" for name in columns]
            lines.append(f"| {label} | " + " | ".join(texts) + " |")
        parts.append(f"{heading} (points; same examples and seed; 95% interval over seeds and examples, {SAMPLES} "
                     f"resamples, seed 0):\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def plot(table: Table, result: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Rows named `<series>@<x>`: one line per series and column, x against mean ± sd."""
    matplotlib = require("matplotlib", extra="plots", purpose="The reproduction's figures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for column in table.columns:
        series: dict[str, list[tuple[float, float, float]]] = {}
        for row, cells in result.items():
            name, _, x = row.rpartition("@")
            cell = cells[column.name]
            if cell["n"]:
                series.setdefault(name, []).append((float(x), cell["mean"], cell["sd"] or 0.0))
        for name, points in series.items():
            xs, ys, sds = zip(*sorted(points))
            ax.errorbar([100 * x for x in xs], ys, yerr=sds, marker="o", capsize=3, label=f"{name} ({column.name})")
    ax.set_xlabel(f"{table.plot} (%)")
    ax.set_ylabel("%")
    ax.set_title(textwrap.fill(table.title, 60), fontsize=9)  # long titles would be cut at the figure's edge
    if ax.get_legend_handles_labels()[0]:  # nothing to label before any run finished
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paper", choices=PAPERS)
    parser.add_argument("--budget", default="smoke", choices=BUDGETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--data_dir", default=None, help="Data folder (default $SUBNETS_DATA_DIR; smoke: toy data).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model_name_or_path", default=None, help="Override the budget's model.")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="Build only these tasks' tables (default: the budget's tasks; any of the paper budget's).")
    parser.add_argument("--executor", default="local", choices=EXECUTORS)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--validation_split_percentage", type=int, default=None,
                        help="Every training stage picks checkpoint-best on this percentage of its training data, "
                             "held out and grouped (README), instead of the evaluation split the report shows "
                             "(default 0: the evaluation split, as the committed reports ran; new run names; "
                             f"--tuning: default {TUNING_SPLIT}).")
    parser.add_argument("--tuning", action="store_true",
                        help="Instead of the paper's tables, choose the cpu budget's hand-chosen settings again: "
                             "train each candidate of the paper module's grids and score it on the held-out "
                             "training rows only; writes tuning.md and tuning.json (docs/reproduce.md, \"Tuning\").")
    parser.add_argument("--report_only", action="store_true",
                        help="Run nothing: write the report from the runs that finished (e.g. while a long "
                             "budget runs).")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    paper, out = load_paper(args.paper), Path(args.output_dir)
    tasks = choose_tasks(paper, args.budget, args.tasks)
    percentage = args.validation_split_percentage
    percentage = (TUNING_SPLIT if args.tuning else 0) if percentage is None else percentage
    if not 0 <= percentage < 100:
        raise SubnetsError(f"--validation_split_percentage {percentage} is out of range; "
                           f"expected a percentage of the training data from 0 (the evaluation split) to 99.")
    if args.tuning and (args.budget == "paper" or not percentage or paper.tuning is None):
        raise SubnetsError("--tuning chooses the cpu budget's settings on held-out training rows; expected --budget "
                           "cpu (or smoke, on toy data), a --validation_split_percentage from 1 to 99 and a paper "
                           "with a tuning grid.")
    if args.budget == "smoke":
        model, data_dir = smoke_inputs(paper, out)
        data_dir = args.data_dir or data_dir
    else:
        model, data_dir = paper.models[args.budget], args.data_dir or default_data_dir()
        if data_dir is None:
            raise SubnetsError("No --data_dir given and SUBNETS_DATA_DIR is not set; expected the offline data folder "
                               "(the smoke budget makes its own toy data).")
    selection = {"validation_split_percentage": percentage} if percentage else {}
    setting = Setting(args.budget, args.model_name_or_path or model, str(data_dir), tuple(args.seeds),
                      {**TRAIN[args.budget], **selection}, EVALUATE[args.budget], tasks)
    command = "python -m subnets.pipelines.reproduce " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.tuning:
        return tune(paper, setting, out, args, command)
    tables = paper.tables(setting)
    plan = Plan(out)
    leaves: dict[str, dict[str, list[Leaf]]] = {}
    for table in tables:
        for row in table.rows:
            leaves.setdefault(table.name, {})[row.name] = [leaf for c in row.chains() for leaf in plan.add(c)]
    if args.report_only:  # against the plan of every task the paper reports, so that runs of other tasks pass
        every = Plan(out)
        for table in paper.tables(dataclasses.replace(setting, tasks=tuple(paper.budget_tasks["paper"]))):
            for row in table.rows:
                for c in row.chains():
                    every.add(c)
        check_recorded_runs(every)
    outcomes = {} if args.report_only else run_plan(plan, SweepSettings(args.executor, args.workers))
    finished = sum(is_finished(plan.directory(run), run) for run in plan.ordered())
    runs = compute_summary(plan)
    timed = [r["seconds"] for r in runs.values() if "seconds" in r]
    devices = sorted({r["device"] for r in runs.values() if "device" in r})
    results = {t.name: collect(t, leaves.get(t.name, {}), out, paper.numbers) for t in tables}
    failed = failed_runs(outcomes)
    parts = [f"# {paper.citation}\n\nModel `{setting.model}`, budget `{args.budget}`, tasks {', '.join(tasks)}, seeds "
             f"{' '.join(map(str, args.seeds))}. Paper numbers: see `pipelines/papers/{paper.name}.py`; n/a = not "
             f"available offline or not implemented; - = its runs have not finished (or failed). Every cell's "
             f"runs are listed in results.json (`runs`), relative to this folder. {finished} of {len(plan.runs)} "
             f"runs finished"
             f"{' (report only: nothing was run)' if args.report_only else ''}.\n\n"
             f"Code commit `{code_commit()}`; command `{command}`. Compute: {sum(timed):.0f} s of run wall time "
             f"over {len(timed)} timed runs (each run's own seconds; runs in parallel overlap), devices: "
             f"{', '.join(devices) or 'not recorded'}. Every run's arguments, seconds and device: provenance.json.\n"]
    for table in tables:
        parts.append(markdown_table(table, results[table.name], args.seeds))
        parts.append(paired_table(table, results[table.name]))
        if table.plot:
            plot(table, results[table.name], out / f"{table.name}.png")
            parts.append(f"![{table.title}]({table.name}.png)\n")
    if paper.notes is not None:
        parts.append(paper.notes(out, results))
    if failed:
        parts.append("## Failed runs\n\n" + "\n".join(failed) + "\n")
    atomic_write_json(out / "provenance.json", {"commit": code_commit(), "command": command, "runs": runs})
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "report.md", "\n".join(parts))
    print("\n".join(parts))
    return {"results": results, "outcomes": outcomes}


def tune(paper: Paper, setting: Setting, out: Path, args: argparse.Namespace, command: str) -> dict[str, Any]:
    """--tuning: run the paper's tuning trials (finished ones are skipped) and write tuning.md / tuning.json."""
    assert paper.tuning is not None
    tunings = paper.tuning(setting)
    plan, leaves = tuning_plan(tunings, out)
    if args.report_only:
        check_recorded_runs(plan)
    outcomes = {} if args.report_only else run_plan(plan, SweepSettings(args.executor, args.workers))
    finished = sum(is_finished(plan.directory(run), run) for run in plan.ordered())
    percentage = setting.train["validation_split_percentage"]
    header = (f"# Tuning: {paper.citation}\n\nModel `{setting.model}`, budget `{setting.budget}`, tasks "
              f"{', '.join(setting.tasks)}, seeds {' '.join(map(str, setting.seeds))}. Every trial trains with "
              f"--validation_split_percentage {percentage} and is scored by its last stage's own eval_* on those "
              f"held-out training rows (no trial evaluates a dev, test, AdvGLUE or attack set); the highest mean "
              f"over seeds and tasks replaces today's value only by more than one binomial standard error of "
              f"today's held-out accuracy. {finished} of {len(plan.runs)} runs "
              f"finished{' (report only: nothing was run)' if args.report_only else ''}.\n\nCode commit "
              f"`{code_commit()}`; command `{command}`. Every trial's runs: tuning.json (`runs`, relative to this "
              f"folder).\n")
    result, text = tuning_report(tunings, leaves, out, header)
    failed = failed_runs(outcomes)
    if failed:
        text += "\n## Failed runs\n\n" + "\n".join(failed) + "\n"
    atomic_write_json(out / "tuning.json", {"commit": code_commit(), "command": command,
                                            "validation_split_percentage": percentage, "seeds": list(setting.seeds),
                                            "tunings": result})
    atomic_write_text(out / "tuning.md", text)
    print(text)
    return {"tuning": result, "outcomes": outcomes}


def cli() -> int:
    return run_cli(lambda argv: require_success(main(argv)["outcomes"]))


if __name__ == "__main__":
    raise SystemExit(cli())
