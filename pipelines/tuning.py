"""`reproduce.py PAPER --budget cpu --tuning`: the cpu budget's hand-chosen settings, chosen again on held-out
training rows and never on a reported set.

Each paper module declares its tunings (`Tuning` in pipelines/papers/__init__.py): training stages of its rows
over a small grid of candidates. Every trial trains with --validation_split_percentage, so its checkpoint-best and
its eval_* come from the held-out training rows; no trial evaluates (no dev, test, AdvGLUE or attack). A candidate
is scored by the mean of its trials' metric over seeds (and tasks), and the highest mean is chosen (a tie goes to
the budget's value today, else to the first candidate in grid order). The report, tuning.md and tuning.json, lists
every trial and says whether the choice differs from the constant the budget uses.
"""

from __future__ import annotations

import json
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
    """Per candidate: its setting, every trial run (seed, held-out metric; None until it finished) and the mean
    over them (None until all finished)."""
    found = []
    for candidate in grid_points(tuning.grid):
        runs = []
        for leaf in leaves:
            if any(leaf.point[key] != value for key, value in candidate.items()):
                continue
            directory = out / leaf.run.name
            value = json.loads((directory / "metrics.json").read_text()).get(tuning.metric) \
                if is_finished(directory, leaf.run) else None
            runs.append({"run": leaf.run.name, "seed": leaf.point.get("seed"), "value": value})
        values = [r["value"] for r in runs]
        mean = sum(values) / len(values) if values and None not in values else None
        found.append({"setting": candidate, "runs": runs, "mean": mean})
    return found


def choose(found: Sequence[Mapping[str, Any]], current: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The candidate with the highest mean (a tie: the budget's value today, else the first); None until every
    candidate's trials finished."""
    if not found or any(t["mean"] is None for t in found):
        return None
    best = max(t["mean"] for t in found)
    tied = [t for t in found if t["mean"] == best]
    return next((t for t in tied if t["setting"] == dict(current)), tied[0])["setting"]


def describe(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in setting.items())


def tuning_report(tunings: Sequence[Tuning], leaves: Mapping[str, Sequence[Leaf]], out: Path,
                  header: str) -> tuple[dict[str, Any], str]:
    """(tuning.json's {tuning: {constant, metric, current, trials, chosen, differs, tied}}, tuning.md's text)."""
    result: dict[str, Any] = {}
    parts = [header]
    for tuning in tunings:
        found = trials(tuning, leaves[tuning.name], out)
        chosen = choose(found, tuning.current)
        differs = None if chosen is None else chosen != dict(tuning.current)
        best = None if chosen is None else next(t["mean"] for t in found if t["setting"] == chosen)
        tied = sum(t["mean"] == best for t in found) - 1 if chosen is not None else 0  # others with the same mean
        result[tuning.name] = {"constant": tuning.constant, "metric": tuning.metric, "current": dict(tuning.current),
                               "trials": found, "chosen": chosen, "differs": differs, "tied": tied}
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
            verdict = (f"Chosen: {describe(chosen)}; " + (f"differs from the value the budget uses today "
                                                          f"({describe(tuning.current)})." if differs else
                                                          "the value the budget uses today.")
                       + (f" A tie with {tied} other candidate(s): the held-out split does not separate them."
                          if tied else ""))
        parts.append(f"## {tuning.name}\n\nConstant `{tuning.constant}`, today {describe(tuning.current)}.\n\n"
                     + "\n".join(lines) + f"\n\n{verdict}\n")
    return result, "\n".join(parts)
