"""Stage 3: draw a ticket at an exact sparsity, apply it to an initialisation, retrain with the mask fixed, evaluate.

    python -m subnets.pipelines.stage3_retrain --mask runs/sst2-hc --init pretrained --sparsity 0.3 \
        --task_name sst2 --output_dir runs/sst2-ticket

--model_name_or_path defaults to the model the stage-2 run started from (needed when --mask is a store id or file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from subnets.pipelines.common import Loaded, StageRun, model_path, run_cli, run_stage
from subnets.config import ModelArguments, StageArgs
from subnets.masking.retrain import (RetrainArguments, load_initialisation, read_mask, retrain_ticket, store_ticket,
                                     ticket_from, ticket_trainer)
from subnets.runs import RETRAIN, model_source, run_config
from subnets.store_options import MaskStoreArguments
from subnets.tasks import TaskSpec

STAGE = RETRAIN.id


def task_source(args: StageArgs) -> str:
    """The run the task defaults to (the mask's run, else the model's); sets --model_name_or_path to the model
    to retrain (`model_source`)."""
    mask = args[RetrainArguments].mask
    args[ModelArguments].model_name_or_path = source = model_source(mask, model_path(args),
                                                                    "model_name_or_path" in args.explicit)
    return mask if run_config(mask) else source


def load(args: StageArgs, task: TaskSpec) -> Loaded:
    """The initialisation (--init) with the ticket applied to it, drawn from --mask; (ticket, mask record) beside."""
    retrain = args[RetrainArguments]
    mask, mask_meta = read_mask(retrain, args[MaskStoreArguments])
    model, tokenizer = load_initialisation(model_path(args), retrain.init, task.label_names, mask_meta.get("weights"))
    return model, tokenizer, (ticket_from(retrain, mask, mask_meta, model), mask_meta)


def train(run: StageRun) -> Callable[[Path], dict[str, Any]]:
    """Retrain with the ticket fixed, then store the ticket and the sparse checkpoint."""
    (ticket, mask_meta), retrain = run.loaded, run.args[RetrainArguments]
    trainer = ticket_trainer(run.model, run.tokenizer, ticket, run.task, run.data.train, run.data.eval, run.training,
                             **run.parts.trainer_options())

    def work(out: Path) -> dict[str, Any]:
        metrics = retrain_ticket(trainer, ticket)
        metrics["mask_source"] = mask_meta.get("id") or mask_meta.get("file") or retrain.mask
        metrics["ticket_id"] = store_ticket(out, run.tokenizer, ticket, run.task, retrain, mask_meta, run.args.seed,
                                           model_path(run.args), run.args[MaskStoreArguments])
        return metrics
    return work


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run_stage(STAGE, argv, train, arguments=[RetrainArguments], source=task_source, load=load)


def cli() -> int:
    """The `subnets-retrain` console command (the same as `python -m subnets.pipelines.stage3_retrain`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
