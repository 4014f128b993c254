"""The GPU check's parts, their caps in seconds, and its report; stdlib only, so that the dry run works before the
bundle is installed and without a GPU, and the summary is written within its cap whatever the phases did.

    python benchmarks/gpu_check_parts.py plan      # one line per part: name, cap, what it measures; then the total
    python benchmarks/gpu_check_parts.py summary --out DIR --work DIR --status FILE
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Phase:
    cap: int  # seconds the shell gives the part (less when the global deadline is nearer)
    measures: str


TOTAL_BUDGET = 360  # seconds for the whole check: setup + phases + summary
SETUP = Phase(25, "the bundle's wheels this Python lacks, into a throwaway virtual environment that sees its packages")
SUMMARY = Phase(10, "summary.md and results.json into --out, the table")
PHASES: dict[str, Phase] = {
    "preflight": Phase(30, "versions, GPU, trainer options, the SDPA kernel used in training and evaluation "
                           "(bf16, fp32)"),
    "tests": Phase(80, "tests/test_cuda.py plus the resume and DDP tests, with CUDA visible"),
    "steps": Phase(70, "step time and peak memory per stage family: bf16, --torch_compile, fp32, TF32 "
                       "(bert-base, batch 32 x 128)"),
    "syncs": Phase(40, "host syncs per step in real stage runs (0 expected after warm-up), GPU busy / wall time"),
    "ddp": Phase(50, "DDP on one GPU: NCCL world size 1 with the wrap forced (all-reduces per step); two gloo "
                     "processes sharing the GPU (identical replicas, rank-0 writes)"),
    "inference": Phase(30, "tickets' inference: dense vs masked vs compact export (50% heads + 50% neurons), "
                           "2:4 semi-structured; batch 1/32/128, max |logit difference|"),
    "attack": Phase(25, "attack throughput: model-only vs end to end (TextFooler, TextBugger; no POS, no USE), "
                        "model share of the wall time"),
}
PARTS: dict[str, Phase] = {"setup": SETUP, **PHASES, "summary": SUMMARY}


def plan_lines() -> list[str]:
    """One line per part (name, cap in seconds, what it does), then the total budget: gpu_check.sh reads them."""
    return [*(f"{name} {part.cap} {part.measures}" for name, part in PARTS.items()),
            f"total {TOTAL_BUDGET} the whole check stops here"]


def table(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table of rows (the union of their keys as columns)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cell = lambda v: "" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)).replace("|", "/")
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows)]


def summarize(out: Path, work: Path, status_file: Path) -> None:
    """results.json and summary.md into `out` from the shell's status lines (phase, exit, seconds, cap) and the
    phases' results; prints the table of phases."""
    phases, overview = [], []
    for line in status_file.read_text().splitlines():
        name, code, seconds, cap = line.split()
        path = work / "results" / f"{name}.json"
        result = json.loads(path.read_text()) if path.is_file() else {"rows": [], "notes": [], "headline": ""}
        code = int(code)
        status = {0: "ok", 3: "problems found", 124: "cut at its cap", 137: "killed at its cap",
                  -1: "not run: global deadline"}.get(code, f"failed (exit {code})")
        phases.append({"phase": name, "status": status, "exit": code, "seconds": int(seconds), "cap": int(cap),
                       **result})
        overview.append({"phase": name, "status": status, "s / cap": f"{seconds} / {cap}",
                         "result": result.get("headline") or (f"{len(result['rows'])} rows measured (summary.md)"
                                                              if result["rows"] else "(see check.log)")})
    device = next((p["device"] for p in phases if p.get("device")), "unknown")
    report = {"device": device, "total_budget_s": TOTAL_BUDGET, "phases": phases}
    lines = [f"# GPU check: {device}", "", *table(overview)]
    for phase in phases:
        lines += ["", f"## {phase['phase']}: {PARTS[phase['phase']].measures}"]
        if phase.get("notes"):
            lines += ["", *(f"- {note}" for note in phase["notes"])]
        if phase["rows"]:
            lines += ["", *table(phase["rows"])]
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps(report, indent=1, default=str)), ("summary.md", "\n".join(lines))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text + "\n")
        os.replace(tmp, out / name)
    print("\n".join(table(overview)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="the parts and their caps")
    summary = sub.add_parser("summary", help="summary.md and results.json from the phases' results")
    summary.add_argument("--out", required=True, help="the check's output folder")
    summary.add_argument("--work", required=True, help="the scratch folder holding results/<phase>.json")
    summary.add_argument("--status", required=True, help="the shell's lines: part, exit status, seconds, cap")
    args = parser.parse_args(argv)
    if args.command == "plan":
        print("\n".join(plan_lines()))
    else:
        summarize(Path(args.out), Path(args.work), Path(args.status))


if __name__ == "__main__":
    main()
