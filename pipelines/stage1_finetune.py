"""Stage 1: fine-tune a pre-trained model on a task (optionally with a robust objective or selective optimizer).

    python -m subnets.pipelines.stage1_finetune --model_name_or_path minilm --task_name sst2 --output_dir runs/sst2-ft
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from subnets.pipelines.common import StageRun, run_cli, run_stage
from subnets.config import DataArguments, StageArgs, TrainingArguments
from subnets.data import Collator, load_split, tokenize
from subnets.distributed import is_main_process
from subnets.evaluation import compute_metrics, predict
from subnets.io import atomic_write_text
from subnets.runs import FINETUNE, PREDICT_RESULTS_FILE
from subnets.tasks import TaskSpec
from subnets.training import Trainer

STAGE = FINETUNE.id


def train(run: StageRun) -> Callable[[Path], dict[str, Any]]:
    """Fine-tune the model, then predict a user task's --test_file."""
    trainer = Trainer(run.model, run.training, run.task, run.data.train, run.data.eval, run.tokenizer,
                      **run.parts.trainer_options())
    return lambda out: {**trainer.train(), **predict_test(out, trainer, run.task, run.args)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return run_stage(STAGE, argv, train)


def predict_test(out: Path, trainer: Trainer, task: TaskSpec, args: StageArgs) -> dict[str, float]:
    """HF's --do_predict for the --test_file of a user task: the final model's `test_*` metrics, and
    `predict_results.txt` (`index<TAB>prediction`, the predicted label name per row, as HF's run_glue writes it).
    Main process only."""
    if not task.user or "test" not in task.local or not is_main_process():
        return {}
    data, training = args[DataArguments], args[TrainingArguments]
    raw = load_split(task, "test", data.data_dir)
    logits = predict(trainer.model, tokenize(raw, trainer.tokenizer, task, data.max_seq_length),
                     Collator(trainer.tokenizer), training.per_device_eval_batch_size, trainer.device, training.bf16)
    names = task.label_names
    rows = "".join(f"{i}\t{names[p]}\n" for i, p in enumerate(logits.argmax(axis=1)))
    atomic_write_text(out / PREDICT_RESULTS_FILE, "index\tprediction\n" + rows)
    print(f"wrote {out / PREDICT_RESULTS_FILE} ({len(raw)} test predictions)")
    return compute_metrics(task, logits, np.asarray(raw["label"]), names, prefix="test_")


def cli() -> int:
    """The `subnets-finetune` console command (the same as `python -m subnets.pipelines.stage1_finetune`)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
