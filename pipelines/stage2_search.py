"""Stage 2: search a mask (hard-concrete L0 gates, straight-through scores, IMP, a random baseline, or one-shot
magnitude / Wanda / SparseGPT pruning).

    python -m subnets.pipelines.stage2_search --model_name_or_path runs/sst2-ft --task_name sst2 \
        --output_dir runs/sst2-hc --method hard_concrete --target_sparsity 0.3

Masks go to the mask store (--mask_store, else $SUBNETS_MASK_STORE, else ./masks_store), as do the update masks
of a --selective optimizer; their ids are listed in <output_dir>/masks.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from subnets.pipelines.common import StageRun, model_path, run_cli, run_stage
from subnets.config import StageArgs
from subnets.masking.search import SearchArguments, check_search, search_arguments, search_mask
from subnets.registry import OptionGroups
from subnets.runs import SEARCH
from subnets.store_options import MaskStoreArguments

STAGE = SEARCH.id


def check(args: StageArgs) -> None:
    check_search(args[SearchArguments], OptionGroups(args.instances))


def train(run: StageRun) -> Callable[[Path], dict[str, Any]]:
    """Search the mask (the search builds its trainers) and put it in the mask store."""
    options = OptionGroups(run.args.instances)
    return lambda out: search_mask(run.model, run.tokenizer, run.task, run.data.train, run.data.eval, run.training,
                                   options[SearchArguments], source=model_path(run.args), options=options,
                                   mask_store=options[MaskStoreArguments], **run.parts.trainer_options())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run_stage(STAGE, argv, train, arguments=search_arguments(), check=check)


def cli() -> int:
    """The `subnets-search` console command (the same as `python -m subnets.pipelines.stage2_search`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
