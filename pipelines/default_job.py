"""The built-in default job: is a 30% ticket of the real small model both sparse and robust? CPU-friendly.

Three models of minilm on real SST-2, each in its own stage run folder under --output_dir:

* `dense/`: stage 1, fine-tuning;
* `ticket/`: stage 2 hard-concrete mask search on the fine-tuned model with cross-entropy (`ticket_search/`),
  stage 3 draws the 30% ticket, rewinds it to the pre-trained weights and retrains it;
* `robust_ticket/`: the same, but the mask is searched under FreeLB (Robust Tickets' adversarial loss,
  `robust_search/`).

All three are evaluated on the SST-2 dev set (all 872), SST-2's labelled test set (1,821 sentences, a held-out
confirmation: nothing was chosen on it), AdvGLUE-SST2 and TextFooler (Clean / Aua / Suc on a fixed sample of SST-2
dev) and printed as one table. The search settings were chosen on a split of the training data,
never on these sets (docs/reproduce.md, "The default job").

    python -m subnets.pipelines.default_job --data_dir DATA --output_dir runs/default

Every stage resumes if interrupted: run the same command again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from subnets.pipelines import evaluate, stage1_finetune, stage2_search, stage3_retrain
from subnets.pipelines.common import run_cli
from subnets.pipelines.sweeping.plan import options_argv
from subnets.data import default_data_dir
from subnets.errors import SubnetsError
from subnets.extras import EXTRAS, require
from subnets.io import atomic_write_json
from subnets.runs import METRICS_FILE

SPARSITY = 0.3
MODELS = ("dense", "ticket", "robust_ticket")
# The mask search both tickets share (hard-concrete gates, CoFi's Lagrangian to reach the target exactly) and
# what the robust search adds: FreeLB on the word embeddings (docs/methods.md, "Adversarial perturbers").
# Chosen on a split of SST-2 train (docs/reproduce.md, "The default job"); the cpu budget of
# `reproduce.py robust_tickets` searches with the same settings.
SEARCH = {"method": "hard_concrete", "target_sparsity": SPARSITY, "controller": "lagrangian", "mask_lr": 0.1,
          "lagrangian_lr": 5.0, "mask_pooler": True}  # the pooler is masked and counted, as in Robust Tickets
ADVERSARY = {"adversary": "freelb", "adv_steps": 2, "adv_lr": 0.03, "adv_init_mag": 0.05, "adv_max_norm": 0.0}
TICKETS = {"ticket": ("ticket_search", {}), "robust_ticket": ("robust_search", ADVERSARY)}  # -> (search run, adds)


def stage_options(data_dir: str, out: Path, name: str, train_samples: int) -> list[str]:
    return ["--task_name", "sst2", "--data_dir", data_dir, "--output_dir", str(out / name),
            "--max_train_samples", str(train_samples), "--num_train_epochs", "1",
            "--learning_rate", "5e-05", "--max_seq_length", "64", "--per_device_train_batch_size", "32",
            "--warmup_ratio", "0.1", "--logging_steps", "10"]


def ticket(data_dir: str, out: Path, name: str, train_samples: int) -> dict[str, Any]:
    """Stage 2 (the ticket's search on the fine-tuned model) -> stage 3 (draw at SPARSITY, rewind, retrain)."""
    search_dir, search = TICKETS[name]
    store = ["--mask_store", str(out / "masks")]
    stage2_search.main(["--model_name_or_path", str(out / "dense"), *options_argv({**SEARCH, **search}), *store,
                        *stage_options(data_dir, out, search_dir, train_samples // 2)])
    return stage3_retrain.main(["--mask", str(out / search_dir), "--init", "pretrained", "--sparsity", str(SPARSITY),
                                *store, *stage_options(data_dir, out, name, train_samples)])


def summary_table(results: dict[str, dict[str, dict[str, float]]], sparsities: dict[str, float]) -> str:
    lines = ["| model | sparsity | SST-2 dev acc | SST-2 test acc | AdvGLUE-SST2 acc | TextFooler Clean | "
             "TextFooler Aua | TextFooler Suc |", "|---|" + "---:|" * 7]
    for name in MODELS:
        sst2, test, adv = (results[name][s] for s in ("sst2", "sst2-test", "advglue-sst2"))
        cells = [sparsities[name], sst2["eval_accuracy"], test["eval_accuracy"], adv["eval_accuracy"],
                 sst2["clean_accuracy"], sst2["accuracy_under_attack"], sst2["attack_success_rate"]]
        lines.append(f"| {name} | " + " | ".join(f"{100 * c:.2f}" if i else f"{100 * c:.1f}%"
                                                  for i, c in enumerate(cells)) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=default_data_dir(), help="Local data folder (default $SUBNETS_DATA_DIR).")
    parser.add_argument("--output_dir", default="runs/default")
    parser.add_argument("--model_name_or_path", default="minilm")
    parser.add_argument("--train_samples", type=int, default=8000,
                        help="SST-2 training sample of stages 1 and 3 (the searches use half).")
    parser.add_argument("--attack_samples", type=int, default=300, help="SST-2 dev sentences TextFooler attacks.")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        raise SubnetsError("No --data_dir given and SUBNETS_DATA_DIR is not set; expected the offline data folder "
                           "(with glue/SST-2) or a machine that can reach the hub.")
    for module in EXTRAS["attacks"]:  # TextFooler runs last: stop now if it cannot, not after the training
        require(module, extra="attacks", purpose="The default job's TextFooler")
    out, n = Path(args.output_dir), args.train_samples
    start = time.perf_counter()
    stage1_finetune.main(["--model_name_or_path", args.model_name_or_path,
                          *stage_options(args.data_dir, out, "dense", n)])
    tickets = {name: ticket(args.data_dir, out, name, n) for name in TICKETS}
    results = evaluate.main(["--checkpoint", *(str(out / name) for name in MODELS),
                             "--tasks", "sst2,sst2-test,advglue-sst2", "--data_dir", args.data_dir, "--max_seq_length", "64",
                             "--attack", "textfooler", "--attack_samples", str(args.attack_samples),
                             "--output_dir", str(out / "eval")])
    sparsities = {"dense": 0.0, **{name: t["sparsity"] for name, t in tickets.items()}}
    table = summary_table(results, sparsities)
    summary = {"models": {name: {"sparsity": sparsities[name], **results[name]} for name in MODELS},
               "sparsity_denominator": tickets["ticket"]["sparsity_denominator"],
               "wall_seconds": time.perf_counter() - start, "table": table}
    print(f"\n{table}\n\nsparsity of {summary['sparsity_denominator']}; TextFooler on {args.attack_samples} "
          f"SST-2 dev sentences\nwall time {summary['wall_seconds'] / 60:.1f} min; details in "
          f"{out}/eval/{METRICS_FILE}")
    atomic_write_json(out / "summary.json", summary)
    return summary


def cli() -> int:
    """The `subnets-default-job` console command (the same as `python -m subnets.pipelines.default_job`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
