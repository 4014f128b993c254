"""Attacks inside `pipelines/evaluate.py`: one attack on one evaluation set (or a user's file) of one checkpoint.

Per attacked set, under `<output_dir>/attacks/<checkpoint>/<set>_<attack>`: `.jsonl` (every finished example,
appended as it ends; the run resumes from it), `.jsonl.config.json`, `_results_summary.json`, `_summary.txt` and
`_results.csv` (TextAttack's outputs). Ctrl-C writes the TextAttack outputs of the finished examples, then stops.
The resume checks the model's weights fingerprint (`subnets.masks.record.model_fingerprint`), recorded in the config
file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no model classes
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from subnets.masks import model_fingerprint

from ..data import USER_FORMATS, read_user_file
from ..distributed import pick_device
from ..errors import SubnetsError
from ..tasks import TaskSpec
from .recipes import AttackOptions, attack_for, paper_sample_size, sample_indices
from .report import comparison_table, summary_table, write_textattack_outputs
from .runner import Example, read_results, run_attack
from .wrapper import HFClassifier


# Examples attacked together by default, per device: enough candidates to fill the model's batches of each length.
DEFAULT_IN_FLIGHT = {"cuda": 64, "cpu": 32}


def is_attackable(task: TaskSpec, model_labels: list[str]) -> bool:
    """Attacks run on a model's own task (not on transfer sets such as AdvGLUE or HANS) in its label space."""
    return task.model_task is None and list(model_labels) == list(task.label_names)


def task_examples(task: TaskSpec, dataset, options: AttackOptions) -> list[Example]:
    """A deterministic sample of an evaluation set (the paper's size by default) as (idx, fields, label)."""
    size = options.attack_samples or paper_sample_size(task.name)
    picked = dataset.select(sample_indices(len(dataset), size, options.attack_seed))
    return [(row["idx"], tuple(row[f] for f in task.text_fields), row["label"]) for row in picked]


def file_examples(path: str | os.PathLike, text_columns: Sequence[str], label_column: str,
                  label_names: Sequence[str], options: AttackOptions) -> list[Example]:
    """A user's file as (row number, fields, label id); labels are ids or the model's label names."""
    path = Path(path)
    if not path.is_file():
        raise SubnetsError(f"--attack_file {path} is not a file; expected a TSV, CSV or JSONL of texts and labels.")
    if not 1 <= len(text_columns) <= 2:
        raise SubnetsError(f"--attack_text_columns names {len(text_columns)} columns; expected one (a sentence) or "
                           f"two (a pair, only the second is modified).")
    if path.suffix.lower() not in USER_FORMATS:
        raise SubnetsError(f"--attack_file {path} has suffix '{path.suffix}'; expected one of {', '.join(USER_FORMATS)}.")
    rows = read_user_file(path, USER_FORMATS[path.suffix.lower()])
    examples = []
    for number, row in enumerate(rows):
        missing = [c for c in (*text_columns, label_column) if c not in row]
        if missing:
            raise SubnetsError(f"--attack_file {path} row {number + 1} lacks column(s) {', '.join(missing)}; "
                               f"expected --attack_text_columns and --attack_label_column to name its columns.")
        raw = str(row[label_column]).strip()
        if raw in label_names:
            label = list(label_names).index(raw)
        elif raw.lstrip("-").isdigit() and 0 <= int(raw) < len(label_names):
            label = int(raw)
        else:
            raise SubnetsError(f"--attack_file {path} row {number + 1} has label '{raw}'; expected a label id "
                               f"0..{len(label_names) - 1} or one of the model's labels {', '.join(label_names)}.")
        examples.append((number, tuple(str(row[c]) for c in text_columns), label))
    if not examples:
        raise SubnetsError(f"--attack_file {path} holds no rows; expected texts and labels.")
    picked = sample_indices(len(examples), options.attack_samples or len(examples), options.attack_seed)
    return [examples[i] for i in picked]


def attack_examples(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example],
                    options: AttackOptions, prefix: str | os.PathLike, *, max_length: int = 128,
                    data_dir: str | os.PathLike | None = None, bf16: bool = True, use_cpu: bool = False) -> dict:
    """Attack the examples (resuming from `<prefix>.jsonl`), write TextAttack's outputs next to it, print its
    table and return the summary with `attack_config`. `data_dir` holds the shipped neighbour lists; `bf16`: bf16
    autocast of the model's forward passes on CUDA; `use_cpu`: the CPU even where CUDA is available."""
    classifier = HFClassifier(model, tokenizer, max_length=max_length, bf16=bf16, device=pick_device(use_cpu=use_cpu))
    in_flight = DEFAULT_IN_FLIGHT.get(classifier.device.type, DEFAULT_IN_FLIGHT["cpu"])
    attack = attack_for(options, classifier, data_dir=data_dir)
    attack.config["model_fingerprint"] = model_fingerprint(model)
    jsonl = Path(f"{prefix}.jsonl")
    try:
        results = run_attack(attack, examples, jsonl_path=jsonl, progress=True,
                             batch_size=in_flight if options.attack_batch_size is None else options.attack_batch_size)
    except KeyboardInterrupt:
        write_textattack_outputs(prefix, read_results(jsonl))
        print(f"\ninterrupted: the finished examples are in {jsonl}; the same command resumes the attack.")
        raise
    summary = write_textattack_outputs(prefix, results)
    print(summary_table(summary))
    return {**summary, "attack_config": attack.config}


def attack_tables(results: Mapping[str, Mapping[str, Mapping[str, float]]], attack: str) -> str:
    """One papers-style table (Clean / Aua / Suc / #Query) per attacked set, checkpoints as rows."""
    sets = list(dict.fromkeys(s for per in results.values() for s, m in per.items() if "accuracy_under_attack" in m))
    blocks = []
    for s in sets:
        rows = {name: per[s] for name, per in results.items() if "accuracy_under_attack" in per.get(s, {})}
        blocks.append(f"\n### {s}: {attack}\n\n" + comparison_table(rows))
    return "".join(blocks)
