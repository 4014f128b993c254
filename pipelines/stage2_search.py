"""Stage 2: search a mask (hard-concrete L0 gates, straight-through scores, IMP, a random baseline, or one-shot
magnitude / Wanda / SparseGPT pruning).

    python pipelines/stage2_search.py --model_name_or_path runs/sst2-ft --task_name sst2 \
        --output_dir runs/sst2-hc --method hard_concrete --target_sparsity 0.3

Masks go to the mask store (--mask_store, else $SUBNETS_MASK_STORE, else ./masks_store), as do the update masks
of a --selective optimizer; their ids are listed in <output_dir>/masks.json.
"""

from __future__ import annotations

from typing import Any, Sequence

from pipelines.common import (build_training_setup, check_run_dir, load_task_data, parse_stage_args, resolve_task,
                              run_cli, run_directory, write_metrics)
from subnets.config import TrainingArguments
from subnets.distributed import init_distributed
from subnets.masking.search import SearchArguments, check_search, search_arguments, search_mask
from subnets.models import load_classifier
from subnets.registry import OptionGroups
from subnets.store_options import MaskStoreArguments
from subnets.training import set_seed

STAGE = "stage2_search"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_stage_args(search_arguments(), argv)
    task = resolve_task(args, args.model_name_or_path)
    check_run_dir(args, STAGE, task)
    check_search(args[SearchArguments], OptionGroups(args.instances))
    set_seed(args.seed)
    model, tokenizer = load_classifier(args.model_name_or_path, task.label_names)
    data = load_task_data(args, task, tokenizer)
    setup = build_training_setup(args, task, data)
    init_distributed(args.use_cpu, args.ddp_backend)  # under torchrun: the process group the Trainer trains in
    with run_directory(args, STAGE, task) as out:  # only once every input has been checked
        metrics = search_mask(model, tokenizer, task, data.train, data.eval, args[TrainingArguments],
                              args[SearchArguments], source=args.model_name_or_path,
                              options=OptionGroups(args.instances), mask_store=args[MaskStoreArguments],
                              objective=setup.objective, callbacks=setup.callbacks,
                              optimizer_factory=setup.optimizer_factory)
        write_metrics(out, metrics)
    return metrics


def cli() -> int:
    """The `subnets-search` console command (the same as `python -m pipelines.stage2_search`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
