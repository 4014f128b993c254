"""Stage 3: draw a ticket at an exact sparsity, apply it to an initialisation, retrain with the mask fixed, evaluate.

    python pipelines/stage3_retrain.py --mask runs/sst2-hc --init pretrained --sparsity 0.3 \
        --task_name sst2 --output_dir runs/sst2-ticket

--model_name_or_path defaults to the model the stage-2 run started from (needed when --mask is a store id or file).
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from pipelines.common import (absolute_path, build_training_setup, check_run_dir, load_task_data, parse_stage_args,
                              resolve_task, run_cli, run_directory, write_metrics)
from subnets.config import ModelArguments, StageArgs, TrainingArguments
from subnets.distributed import init_distributed
from subnets.masking.retrain import (RetrainArguments, load_initialisation, read_mask, retrain_ticket, store_ticket,
                                     ticket_from, ticket_trainer)
from subnets.masking.sources import run_config, run_model_source
from subnets.store_options import MaskStoreArguments
from subnets.training import set_seed

STAGE = "stage3_retrain"


def model_source(args: StageArgs) -> str:
    """The model to retrain: an explicit --model_name_or_path, else the one the stage-2 run (--mask) started from."""
    run_source = run_model_source(args[RetrainArguments].mask)
    if run_source is None:
        return args.model_name_or_path
    if "model_name_or_path" not in args.explicit:
        return run_source
    if absolute_path(args.model_name_or_path) != absolute_path(run_source):
        print(f"warning: --model_name_or_path {args.model_name_or_path} is used, not {run_source}, the model the "
              f"mask's run {args[RetrainArguments].mask} started from.", file=sys.stderr)
    return args.model_name_or_path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_stage_args([RetrainArguments], argv)
    retrain = args[RetrainArguments]
    source = model_source(args)
    args[ModelArguments].model_name_or_path = source
    task = resolve_task(args, retrain.mask if run_config(retrain.mask) else source)
    check_run_dir(args, STAGE, task)
    set_seed(args.seed)
    store = args[MaskStoreArguments]
    mask, mask_meta = read_mask(retrain, store)
    model, tokenizer = load_initialisation(source, retrain.init, task.label_names, mask_meta.get("weights"))
    ticket = ticket_from(retrain, mask, mask_meta, model)
    data = load_task_data(args, task, tokenizer)
    setup = build_training_setup(args, task, data)
    init_distributed(args.use_cpu, args.ddp_backend)  # under torchrun: the process group the Trainer trains in
    trainer = ticket_trainer(model, tokenizer, ticket, task, data.train, data.eval, args[TrainingArguments],
                             objective=setup.objective, callbacks=setup.callbacks,
                             optimizer_factory=setup.optimizer_factory)
    with run_directory(args, STAGE, task) as out:  # only once every input has been checked
        metrics = retrain_ticket(trainer, ticket)
        metrics["mask_source"] = mask_meta.get("id") or mask_meta.get("file") or retrain.mask
        metrics["ticket_id"] = store_ticket(out, tokenizer, ticket, task, retrain, mask_meta, args.seed, source,
                                           store)
        write_metrics(out, metrics)
    return metrics



def cli() -> int:
    """The `subnets-retrain` console command (the same as `python -m pipelines.stage3_retrain`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
