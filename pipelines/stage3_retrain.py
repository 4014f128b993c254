"""Stage 3: draw a ticket at an exact sparsity, apply it to an initialisation, retrain with the mask fixed, evaluate.

    python pipelines/stage3_retrain.py --mask runs/sst2-hc --init pretrained --sparsity 0.3 \
        --task_name sst2 --output_dir runs/sst2-ticket

--model_name_or_path defaults to the model the stage-2 run started from (needed when --mask is a store id or file).
"""

from __future__ import annotations

from typing import Any, Sequence

from pipelines.common import (build_training_setup, load_task_data, parse_stage_args, prepare_run_dir, resolve_task,
                              run_cli, write_metrics)
from subnets.config import ModelArguments, TrainingArguments
from subnets.masking.retrain import (RetrainArguments, draw_ticket, load_initialisation, retrain_ticket,
                                     store_ticket)
from subnets.masking.sources import run_config, run_model_source
from subnets.training import set_seed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_stage_args([RetrainArguments], argv)
    retrain = args[RetrainArguments]
    source = run_model_source(retrain.mask) or args.model_name_or_path
    args[ModelArguments].model_name_or_path = source
    task = resolve_task(args, retrain.mask if run_config(retrain.mask) else source)
    set_seed(args.seed)
    ticket, mask_meta = draw_ticket(retrain)
    model, tokenizer = load_initialisation(source, retrain.init, task.label_names)
    data = load_task_data(args, task, tokenizer)
    setup = build_training_setup(args, task, data)
    out = prepare_run_dir(args, "stage3_retrain", task)  # only once every input has been checked
    metrics = retrain_ticket(model, tokenizer, ticket, task, data.train, data.eval, args[TrainingArguments],
                             objective=setup.objective, callbacks=setup.callbacks,
                             optimizer_factory=setup.optimizer_factory)
    metrics["mask_source"] = mask_meta.get("id") or mask_meta.get("file") or retrain.mask
    metrics["ticket_id"] = store_ticket(out, tokenizer, ticket, task, retrain, mask_meta, args.seed, source)
    write_metrics(out, metrics)
    return metrics



def cli() -> int:
    """The `subnets-retrain` console command (the same as `python -m pipelines.stage3_retrain`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
