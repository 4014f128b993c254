"""`reproduce.py PAPER --budget cpu --tuning`: the cpu budget's hand-chosen settings, chosen again on held-out
training rows and never on a reported set.

Each paper module declares its tunings (`Tuning` in pipelines/papers/__init__.py): training stages of its rows
over a small grid of candidates. Every trial trains with --validation_split_percentage, so its checkpoint-best and
its eval_* come from the held-out training rows; no trial evaluates (no dev, test, AdvGLUE or attack). A candidate
is scored by the mean of its trials' metric over seeds (and tasks). The highest mean replaces the budget's value
today only where it beats today's mean by more than one binomial standard error of today's held-out accuracy,
sqrt(p (1 - p) / n) over all its trials' n held-out rows: a smaller gap is within the sampling error of one split
and keeps today's value (ties among the others go to the first in grid order). The report, tuning.md and
tuning.json, lists every trial, the margin, and whether the choice differs from the constant the budget uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from subnets.pipelines.papers import Tuning
from subnets.pipelines.sweeping.execute import is_finished
from subnets.pipelines.sweeping.plan import Leaf, Plan, grid_points
from subnets.errors import SubnetsError


def tuning_plan(tunings: Sequence[Tuning], out: Path) -> tuple[Plan, dict[str, list[Leaf]]]:
    """The runs of every tuning's trials (one plan: runs that two tunings share run once) and, per tuning, the
    leaf runs its candidates are scored on."""
    plan, leaves = Plan(out), {}
    for tuning in tunings:
        for c in tuning.chains:
            if "evaluate" in c.stages:
                raise SubnetsError(f"Tuning '{tuning.name}' runs evaluate; expected training stages only (a trial "
                                   f"is scored on its held-out training rows).")
            if set(tuning.grid) - set(c.grid):
                raise SubnetsError(f"Tuning '{tuning.name}': a trial chain lacks grid keys "
                                   f"{sorted(set(tuning.grid) - set(c.grid))}; expected every candidate key.")
        leaves[tuning.name] = [leaf for c in tuning.chains for leaf in plan.add(c)]
    return plan, leaves


def trials(tuning: Tuning, leaves: Sequence[Leaf], out: Path) -> list[dict[str, Any]]:
    """Per candidate: its setting, every trial run (seed, held-out metric and rows; None until it finished) and
    the mean over them (None until all finished)."""
    found = []
    for candidate in grid_points(tuning.grid):
        runs = []
        for leaf in leaves:
            if any(leaf.point[key] != value for key, value in candidate.items()):
                continue
            directory = out / leaf.run.name
            metrics = json.loads((directory / "metrics.json").read_text()) if is_finished(directory, leaf.run) else {}
            runs.append({"run": leaf.run.name, "seed": leaf.point.get("seed"), "value": metrics.get(tuning.metric),
                         "rows": metrics.get("eval_samples")})
        values = [r["value"] for r in runs]
        mean = sum(values) / len(values) if values and None not in values else None
        found.append({"setting": candidate, "runs": runs, "mean": mean})
    return found


def standard_error(trial: Mapping[str, Any]) -> float:
    """One binomial standard error of a candidate's mean held-out accuracy: sqrt(p (1 - p) / n), n its trials'
    held-out rows together."""
    rows = sum(r["rows"] for r in trial["runs"])
    return math.sqrt(trial["mean"] * (1 - trial["mean"]) / rows)


def leaders(found: Sequence[Mapping[str, Any]],
            current: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(the candidate with the highest mean, today's candidate): a tie goes to today's value, else to the first in
    grid order. Every candidate's trials must have finished."""
    today = next(t for t in found if t["setting"] == dict(current))
    return max(found, key=lambda t: (t["mean"], t is today)), today


def choose(found: Sequence[Mapping[str, Any]], current: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The candidate with the highest mean, where it beats today's value by more than one standard error of
    today's mean (`standard_error`); else today's value. None until every candidate's trials finished."""
    if not found or any(t["mean"] is None for t in found):
        return None
    best, today = leaders(found, current)
    return best["setting"] if best["mean"] - today["mean"] > standard_error(today) else today["setting"]


def describe(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in setting.items())


def tuning_report(tunings: Sequence[Tuning], leaves: Mapping[str, Sequence[Leaf]], out: Path,
                  header: str) -> tuple[dict[str, Any], str]:
    """(tuning.json's {tuning: {constant, metric, current, trials, chosen, differs, margin}}, tuning.md's text)."""
    result: dict[str, Any] = {}
    parts = [header]
    for tuning in tunings:
        found = trials(tuning, leaves[tuning.name], out)
        chosen = choose(found, tuning.current)
        differs = None if chosen is None else chosen != dict(tuning.current)
        best, today = leaders(found, tuning.current) if chosen is not None else (None, None)
        margin = None if today is None else standard_error(today)
        result[tuning.name] = {"constant": tuning.constant, "metric": tuning.metric, "current": dict(tuning.current),
                               "trials": found, "chosen": chosen, "differs": differs, "margin": margin}
        lines = [f"| candidate | seeds | held-out {tuning.metric} per trial (%) | mean (%) |", "|---|---|---|---:|"]
        for t in found:
            marks = [m for m, on in (("today", t["setting"] == dict(tuning.current)),
                                     ("chosen", t["setting"] == chosen)) if on]
            values = " / ".join("-" if r["value"] is None else f"{100 * r['value']:.2f}" for r in t["runs"])
            mean = "-" if t["mean"] is None else f"{100 * t['mean']:.2f}"
            seeds = " ".join(str(r["seed"]) for r in t["runs"])
            label = describe(t["setting"]) + (f" ({', '.join(marks)})" if marks else "")
            lines.append(f"| {label} | {seeds} | {values} | {mean} |")
        if chosen is None:
            verdict = "Not chosen yet: some trials have not finished (or failed)."
        else:
            gap = 100 * (best["mean"] - today["mean"])
            verdict = (f"Chosen: {describe(chosen)}; " + (
                f"differs from the value the budget uses today ({describe(tuning.current)}): it beats today's mean "
                f"by {gap:.2f} points, more than one standard error ({100 * margin:.2f})." if differs else
                "the value the budget uses today" + (
                    f"; the best mean ({describe(best['setting'])}) beats it by only {gap:.2f} points, within one "
                    f"standard error ({100 * margin:.2f}): the held-out split does not separate them."
                    if best is not today else ".")))
        parts.append(f"## {tuning.name}\n\nConstant `{tuning.constant}`, today {describe(tuning.current)}.\n\n"
                     + "\n".join(lines) + f"\n\n{verdict}\n")
    return result, "\n".join(parts)
