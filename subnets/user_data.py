"""Tasks read from the user's own files (`--train_file`, `--validation_file`, `--test_file`).

A user task is a `TaskSpec` like the registry's, with `user=True` and absolute file paths: text columns are its
fields, `--label_names` its labels (when absent: the sorted distinct values of the train file's label column, as
HF's run_glue infers them). `task_record` / `task_from_record` put it into a run's `run_config.json`, so that
later stages reading a run directory train and evaluate on the same task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import USER_FORMATS, check_labels_present, read_user_file
from .errors import SubnetsError
from .tasks import TASKS, LocalSource, TaskSpec

DEFAULT_USER_TASK = "custom"
SPLIT_OPTIONS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}


@dataclass
class DataFileArguments:
    _argument_group_name = "data (your own files)"  # its --help section
    train_file: str | None = field(default=None, metadata={"help": "Your training data: .csv, .tsv or .jsonl."})
    validation_file: str | None = field(default=None, metadata={"help": "Your evaluation data (same format)."})
    test_file: str | None = field(default=None, metadata={"help": "Your held-out test data (same format)."})
    text_columns: str | None = field(
        default=None, metadata={"help": "The text column, or two comma-separated columns for sentence pairs."})
    label_column: str = field(default="label", metadata={"help": "The column holding the label."})
    label_names: str | None = field(
        default=None, metadata={"help": "Comma-separated label names in class order (default: the sorted values "
                                        "of the train file's label column)."})

    @property
    def given(self) -> bool:
        return any(getattr(self, option) for option in SPLIT_OPTIONS.values())


def _files(args: DataFileArguments) -> dict[str, Path]:
    files = {}
    for split, option in SPLIT_OPTIONS.items():
        value = getattr(args, option)
        if not value:
            continue
        path = Path(value).expanduser().resolve()
        if not path.is_file():
            raise SubnetsError(f"--{option} {value} does not exist; expected a .csv, .tsv or .jsonl file.")
        if path.suffix.lower() not in USER_FORMATS:
            raise SubnetsError(f"--{option} {value} has an unknown format; expected a file ending in "
                               f"{', '.join(USER_FORMATS)}.")
        files[split] = path
    return files


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    """Distinct label values in order: numerically when all are integers, else alphabetically."""
    if all(v.lstrip("-").isdigit() for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def parse_label_names(text: str) -> tuple[str, ...]:
    """--label_names as a tuple of at least two distinct names."""
    labels = tuple(n.strip() for n in text.split(",") if n.strip())
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise SubnetsError(f"--label_names '{text}' is not valid; expected at least two distinct comma-separated "
                           f"names.")
    return labels


def check_label_names(args: DataFileArguments, task: TaskSpec) -> None:
    """--label_names beside a task not read from the user's files (built-in, or a run's) must name its labels."""
    if not args.label_names or args.given:
        return
    if [n.lower() for n in parse_label_names(args.label_names)] != [n.lower() for n in task.label_names]:
        raise SubnetsError(f"--label_names '{args.label_names}' does not match task '{task.name}', whose labels are "
                           f"{','.join(task.label_names)}; expected those, in this order, or no --label_names (it "
                           f"names the labels of your own data files).")


def user_task(args: DataFileArguments, name: str | None = None, labels: tuple[str, ...] | None = None) -> TaskSpec:
    """The task the data file options describe. Its labels: `labels` if given (a recorded task, a checkpoint's),
    else --label_names, else the sorted label values of the train (or first given) file."""
    name = name or DEFAULT_USER_TASK
    if name.lower() in TASKS:
        raise SubnetsError(f"--task_name '{name}' is a built-in task; expected another name for a task read from "
                           f"your own files (or no --train_file/--validation_file/--test_file).")
    files = _files(args)
    if not files:
        raise SubnetsError("No data file given; expected --train_file, --validation_file or --test_file.")
    columns = tuple(c.strip() for c in (args.text_columns or "").split(",") if c.strip())
    if len(columns) not in (1, 2):
        raise SubnetsError(f"--text_columns '{args.text_columns or ''}' is not valid; expected one column name, or "
                           f"two separated by a comma for sentence pairs.")
    readers = {split: USER_FORMATS[path.suffix.lower()] for split, path in files.items()}
    if labels:
        labels = tuple(labels)
    elif args.label_names:
        labels = parse_label_names(args.label_names)
    else:
        split = "train" if "train" in files else next(iter(files))
        rows = read_user_file(files[split], readers[split])
        if rows and args.label_column not in rows[0]:
            raise SubnetsError(f"Label column '{args.label_column}' is missing in {files[split]}; found columns "
                               f"{sorted(rows[0])}.")
        check_labels_present(rows, args.label_column, str(files[split]))
        labels = _sorted_labels({str(r[args.label_column]).strip() for r in rows})
        if len(labels) < 2:
            raise SubnetsError(f"{files[split]} has {len(labels)} distinct label(s) in column '{args.label_column}'; "
                               f"expected at least two (or give --label_names).")
    local = {split: LocalSource((str(path),), readers[split], {c: c for c in columns}, label=args.label_column)
             for split, path in files.items()}
    return TaskSpec(name, columns, labels, "accuracy", local=local, trainable="train" in files,
                    eval_split="validation" if "validation" in files else "test" if "test" in files else "validation",
                    bias_field=columns[-1] if len(columns) == 2 else None, user=True)


def task_record(task: TaskSpec) -> dict[str, Any]:
    """What `run_config.json` keeps of a user task (enough to rebuild it with `task_from_record`)."""
    return {"name": task.name, "text_columns": list(task.text_fields), "label_names": list(task.label_names),
            "label_column": next(iter(task.local.values())).label,
            "files": {split: source.paths[0] for split, source in task.local.items()}}


def task_from_record(record: dict[str, Any]) -> TaskSpec:
    args = DataFileArguments(**{SPLIT_OPTIONS[split]: path for split, path in record["files"].items()},
                             text_columns=",".join(record["text_columns"]), label_column=record["label_column"])
    return user_task(args, record["name"], tuple(record["label_names"]))
