"""Stage 1: fine-tune a pre-trained model on a task (optionally with a robust objective or selective optimizer).

    python pipelines/stage1_finetune.py --model_name_or_path minilm --task_name sst2 --output_dir runs/sst2-ft
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipelines.common import (build_training_setup, check_run_dir, load_task_data, parse_stage_args, resolve_task,
                              run_cli, run_directory, write_metrics)
from subnets.config import StageArgs, TrainingArguments
from subnets.data import Collator, load_split, tokenize
from subnets.distributed import init_distributed, is_main_process
from subnets.evaluation import compute_metrics, predict
from subnets.io import atomic_write_text
from subnets.models import load_classifier
from subnets.tasks import TaskSpec
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
        metrics.update(predict_test(out, trainer, task, args))
        write_metrics(out, metrics)
    return metrics


PREDICTIONS_FILE = "predict_results.txt"


def predict_test(out: Path, trainer: Trainer, task: TaskSpec, args: StageArgs) -> dict[str, float]:
    """HF's --do_predict for the --test_file of a user task: the final model's `test_*` metrics, and
    `predict_results.txt` (`index<TAB>prediction`, the predicted label name per row, as HF's run_glue writes it).
    Main process only."""
    if not task.user or "test" not in task.local or not is_main_process():
        return {}
    raw = load_split(task, "test", args.data_dir)
    logits = predict(trainer.model, tokenize(raw, trainer.tokenizer, task, args.max_seq_length),
                     Collator(trainer.tokenizer), args.per_device_eval_batch_size, trainer.device, args.bf16)
    names = task.label_names
    rows = "".join(f"{i}\t{names[p]}\n" for i, p in enumerate(logits.argmax(axis=1)))
    atomic_write_text(out / PREDICTIONS_FILE, "index\tprediction\n" + rows)
    print(f"wrote {out / PREDICTIONS_FILE} ({len(raw)} test predictions)")
    return compute_metrics(task, logits, np.asarray(raw["label"]), names, prefix="test_")



def cli() -> int:
    """The `subnets-finetune` console command (the same as `python -m pipelines.stage1_finetune`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
