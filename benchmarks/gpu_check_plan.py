"""The GPU check's parts and their caps in seconds (stdlib only: `gpu_check.sh --dry_run` runs it before the
bundle is installed, and without a GPU).

    python benchmarks/gpu_check_plan.py        # one line per part: name, cap, what it measures
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    cap: int  # seconds the shell gives the part (less when the global deadline is nearer)
    measures: str


TOTAL_BUDGET = 360  # seconds for the whole check: setup + phases + summary
SETUP = Phase(25, "a virtual environment over the system packages plus the bundle's missing wheels")
SUMMARY = Phase(10, "summary.md and results.json into --out, the table")
PHASES: dict[str, Phase] = {
    "preflight": Phase(20, "versions, GPU, trainer options, the SDPA kernel used in training and evaluation "
                           "(bf16, fp32)"),
    "tests": Phase(85, "tests/test_cuda.py plus the resume and DDP tests, with CUDA visible"),
    "steps": Phase(80, "step time and peak memory per stage family: bf16, --torch_compile, fp32, TF32 "
                       "(bert-base, batch 32 x 128)"),
    "syncs": Phase(40, "host syncs per step in real stage runs (0 expected after warm-up), GPU busy / wall time"),
    "ddp": Phase(40, "DDP on one GPU: NCCL world size 1 with the wrap forced (all-reduces per step); two gloo "
                     "processes sharing the GPU (identical replicas, rank-0 writes)"),
    "inference": Phase(30, "tickets' inference: dense vs masked vs compact export (50% heads + 50% neurons), "
                           "2:4 semi-structured; batch 1/32/128, max |logit difference|"),
    "attack": Phase(30, "attack throughput: model-only vs end to end (TextFooler, TextBugger; no POS, no USE), "
                        "model share of the wall time"),
}
PARTS: dict[str, Phase] = {"setup": SETUP, **PHASES, "summary": SUMMARY}


def plan_lines() -> list[str]:
    """One line per part (name, cap in seconds, what it does), then the total budget: gpu_check.sh reads them."""
    return [*(f"{name} {part.cap} {part.measures}" for name, part in PARTS.items()),
            f"total {TOTAL_BUDGET} the whole check stops here"]


if __name__ == "__main__":
    print("\n".join(plan_lines()))
