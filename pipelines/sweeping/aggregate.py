"""Mean +- sd over seeds per grid cell, from the runs' metrics.json, as JSON and markdown."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from subnets.runs import METRICS_FILE

from .plan import Leaf, option_value


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numeric values of a stage's metrics.json; evaluate's {checkpoint: {set: {key: v}}} becomes `set/key`
    (one checkpoint per evaluate run in a sweep)."""
    flat: dict[str, float] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[prefix] = float(value)

    if metrics and all(isinstance(v, Mapping) for v in metrics.values()) and len(metrics) == 1:
        metrics = next(iter(metrics.values()))  # evaluate: drop the checkpoint level
    visit("", metrics)
    return flat


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def cell_label(point: Mapping[str, Any], over: str) -> str:
    items = [(k, v) for k, v in point.items() if k.rpartition(".")[2] != over]
    return ",".join(f"{k}={'+'.join(option_value(v))}" for k, v in items) or "all"


def aggregate(records: Iterable[tuple[Mapping[str, Any], str, Mapping[str, float]]], over: str = "seed"
              ) -> dict[str, dict[str, Any]]:
    """Group (grid point, run directory, flat metrics) records by the point without `over`; per cell:
    `options`, `seeds` (the values of `over`), `runs` and `metrics` {key: {mean, sd, n}}. A metric missing
    from some runs of a cell is averaged over the runs that have it (its n says how many)."""
    cells: dict[str, dict[str, Any]] = {}
    for point, run_dir, metrics in records:
        label = cell_label(point, over)
        cell = cells.setdefault(label, {"options": {k: v for k, v in point.items() if k.rpartition(".")[2] != over},
                                        "seeds": [], "runs": [], "values": {}})
        cell["seeds"].append(next((v for k, v in point.items() if k.rpartition(".")[2] == over), None))
        cell["runs"].append(run_dir)
        for key, value in metrics.items():
            cell["values"].setdefault(key, []).append(value)
    for cell in cells.values():
        cell["metrics"] = {k: mean_sd(v) for k, v in cell.pop("values").items()}
    return cells


def leaf_records(leaves: Iterable[Leaf], output_dir: Path) -> list[tuple[Mapping[str, Any], str, dict[str, float]]]:
    """The (point, run directory, flat metrics) of every leaf run that has metrics.json."""
    records = []
    for leaf in leaves:
        path = output_dir / leaf.run.name / METRICS_FILE
        if path.is_file():
            records.append((leaf.point, leaf.run.name, flat_metrics(json.loads(path.read_text()))))
    return records


def format_mean_sd(stat: Mapping[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not stat:
        return "n/a"
    text = f"{scale * stat['mean']:.{digits}f}"
    return text + (f" ± {scale * stat['sd']:.{digits}f}" if stat.get("sd") is not None else "")


def default_metrics(cells: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Evaluation metrics present in every cell (eval_* keys, at any depth), runtime keys left out."""
    keys = [set(c["metrics"]) for c in cells.values()]
    common = set.intersection(*keys) if keys else set()
    return sorted(k for k in common if k.rpartition("/")[2].startswith("eval_")
                  and not k.endswith(("_runtime", "_per_second")))


def markdown(cells: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] | None = None, over: str = "seed") -> str:
    """One row per cell: its options, the seeds, mean ± sd of each metric, and the run directories."""
    metrics = list(metrics) if metrics else default_metrics(cells)
    lines = ["| cell | " + over + "s | " + " | ".join(metrics) + " | runs |",
             "|---|---|" + "---:|" * len(metrics) + "---|"]
    for label, cell in cells.items():
        values = [format_mean_sd(cell["metrics"].get(m), digits=4) for m in metrics]
        seeds = " ".join(str(s) for s in cell["seeds"])
        lines.append(f"| {label} | {seeds} | " + " | ".join(values) + " | " + "<br>".join(cell["runs"]) + " |")
    return "\n".join(lines) + "\n"
