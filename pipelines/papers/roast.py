"""RoAST (Kim et al., "RoAST: Robustifying Language Models via Adversarial Perturbation with Selective Training",
Findings of EMNLP 2023): the multi-perspective robustness table.

Rows: vanilla fine-tuning, FreeLB, Child-Tuning-D (RoAST's hard top-(1 - alpha) Fisher mask computed once,
plain cross-entropy: `--selective roast --roast_beta inf --roast_refresh_fisher false --adversary none`, with
the task's alpha from its recipe; docs/selective.md) and RoAST (recipe `roast_<task>`). Columns per task:
in-distribution accuracy, accuracy on the distribution-shift sets available offline (QQP: PAWS-QQP; the other
tasks have none offline), AdvGLUE accuracy, calibration (ECE, lower is better) and anomaly detection (AUROC of the
max-softmax confidence, the task's dev inputs against another task's inputs; docs/robustness.md).

Paper numbers: none; every paper cell reads n/a (all five columns of the four rows). The tables of Kim et al.
2023 (arXiv 2312.04032) are not in the stored material: the stored web pages (ar5iv, a Markdown copy, the
Hugging Face paper page) are searchable only from their beginning (title, abstract, introduction); bbuing9/RoAST
(README and files) prints only the format of its evaluation output, no values; the public-GitHub file index holds
no transcription of the paper (searched for its title and abstract sentences), and the issue threads none. The
paper's own tasks are sentiment (SST-2) and entailment (MNLI) with several shift and anomaly sets each; the tasks
here are the recipes' (SST-2, QNLI, RTE, QQP).
"""

from __future__ import annotations

from typing import Any

from subnets.pipelines.papers import (SST2_TEST, Column, Paper, Row, Setting, Table, Tuning, finetune, held_out,
                                      schedule_tuning)
from subnets.pipelines.papers.robust_tickets import freelb

CITATION = ("Kim et al., RoAST: Robustifying Language Models via Adversarial Perturbation with Selective Training, "
            "Findings of EMNLP 2023")
NUMBERS: dict[str, dict[str, dict[str, float]]] = {}
BUDGET_TASKS = {"smoke": ["sst2", "qqp"], "cpu": ["sst2", "qqp"], "paper": ["sst2", "qnli", "rte", "qqp"]}
SHIFT = {"qqp": {"PAWS-QQP": "paws-qqp"}}  # distribution-shift sets (column label -> evaluation set) per task
ANOMALY = {"sst2": "rte", "qnli": "sst2", "rte": "sst2", "qqp": "sst2"}  # the task whose inputs are anomalies
CHILD_TUNING_D = {"adversary": "none", "roast_beta": "inf", "roast_refresh_fisher": False}
# The authors' training setting (bbuing9/RoAST): common.py's defaults (--epochs 10, --batch_size 16, --model_lr
# 1e-5, --weight_decay 0.01) and roast_optim.py set_optimizer (betas (0.9, 0.98), eps 1e-6, warm-up
# int(0.06 * total_steps) of a polynomial-decay schedule with power 1, i.e. linear)
PAPER_SCHEDULE = {"num_train_epochs": 10, "per_device_train_batch_size": 16, "learning_rate": 1e-5,
                  "weight_decay": 0.01, "adam_beta2": 0.98, "adam_epsilon": 1e-6, "warmup_ratio": 0.06}
# Per budget, options over every row (cpu: the measured minilm setting of docs/selective.md)
SCHEDULE: dict[str, dict[str, Any]] = {
    "smoke": {},
    "cpu": {"learning_rate": 1e-4, "num_train_epochs": 2, "warmup_ratio": 0.06, "adam_beta2": 0.98},
    "paper": PAPER_SCHEDULE,
}


def columns(task: str) -> list[Column]:
    return [Column("In-distribution acc", f"{task}/eval_accuracy"),
            *[Column(f"Shift: {label} acc", f"{name}/eval_accuracy") for label, name in SHIFT.get(task, {}).items()],
            Column("AdvGLUE acc", f"advglue-{task}/eval_accuracy"),
            Column("ECE", f"{task}/eval_ece"),
            Column("Anomaly AUROC", f"{task}/ood_auroc")]


def method_rows(setting: Setting, task: str) -> dict[str, Any]:
    sets = ",".join([task, *SHIFT.get(task, {}).values(), f"advglue-{task}"])
    evaluate = {"tasks": sets, "ood_task": ANOMALY[task]}
    schedule = SCHEDULE[setting.budget]
    return {"vanilla": finetune(setting, task, schedule, evaluate),
            "FreeLB": finetune(setting, task, {**schedule, **freelb(setting, task)}, evaluate),
            "Child-Tuning-D": finetune(setting, task, {"recipe": f"roast_{task}", **schedule, **CHILD_TUNING_D},
                                       evaluate),
            "RoAST": finetune(setting, task, {"recipe": f"roast_{task}", **schedule}, evaluate)}


# RoAST's two parts, each paired with the row that lacks it: what the adversarial perturbation adds to selective
# training (against Child-Tuning-D), and what selective training adds to an adversary (against FreeLB)
COMPARISONS = (("RoAST", "Child-Tuning-D"), ("RoAST", "FreeLB"))


def tunings(setting: Setting) -> list[Tuning]:
    """The cpu schedule (SCHEDULE["cpu"], every row's) tried on the vanilla row of each task
    (papers.CPU_SCHEDULE_GRID), on held-out training rows."""
    return [schedule_tuning("SCHEDULE['cpu']", SCHEDULE["cpu"],
                            [method_rows(setting, task)["vanilla"] for task in setting.tasks])]


def tables(setting: Setting) -> list[Table]:
    found = []
    for task in setting.tasks:
        test = task == "sst2"  # held-out confirmation: the SST-2 models on SST-2's labelled test set
        found.append(Table(task, f"{task.upper()}: multi-perspective robustness (%; ECE lower is better)",
                           columns(task) + ([Column("SST-2 test acc", f"{SST2_TEST}/eval_accuracy")] if test else []),
                           [Row(name, [c, held_out(c)] if test else c)
                            for name, c in method_rows(setting, task).items()], baseline="vanilla",
                           comparisons=COMPARISONS))
    return found


PAPER = Paper("roast", CITATION, NUMBERS, ("sst2", "qqp", "paws-qqp", "advglue-sst2", "advglue-qqp", "rte",
                                            SST2_TEST),
              {"smoke": "tiny", "cpu": "minilm", "paper": "roberta-large"}, BUDGET_TASKS, tables, tuning=tunings)
