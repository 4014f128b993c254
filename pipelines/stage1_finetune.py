"""Stage 1: fine-tune a pre-trained model on a task (optionally with a robust objective or selective optimizer).

    python pipelines/stage1_finetune.py --model_name_or_path minilm --task_name sst2 --output_dir runs/sst2-ft
"""

from __future__ import annotations

from typing import Any, Sequence

from pipelines.common import (build_training_setup, check_run_dir, load_task_data, parse_stage_args, resolve_task,
                              run_cli, run_directory, write_metrics)
from subnets.config import TrainingArguments
from subnets.distributed import init_distributed
from subnets.models import load_classifier
from subnets.training import Trainer, set_seed

STAGE = "stage1_finetune"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_stage_args([], argv)
    task = resolve_task(args, args.model_name_or_path)
    check_run_dir(args, STAGE, task)
    set_seed(args.seed)
    model, tokenizer = load_classifier(args.model_name_or_path, task.label_names)
    data = load_task_data(args, task, tokenizer)
    setup = build_training_setup(args, task, data)
    init_distributed(args.use_cpu, args.ddp_backend)  # under torchrun: the process group the Trainer trains in
    trainer = Trainer(model, args[TrainingArguments], task, data.train, data.eval, tokenizer,
                      objective=setup.objective, callbacks=setup.callbacks, optimizer_factory=setup.optimizer_factory)
    with run_directory(args, STAGE, task) as out:  # only once every input has been checked
        metrics = trainer.train()
        write_metrics(out, metrics)
    return metrics



def cli() -> int:
    """The `subnets-finetune` console command (the same as `python -m pipelines.stage1_finetune`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
