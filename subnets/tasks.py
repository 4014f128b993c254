"""Task registry: text fields, label names, metric and the two sources (hub, local directory) of every task.

Local files follow the layout of the offline data folder (see its MANIFEST.md): `glue/SST-2/train.tsv`, ...,
which for SST-2, RTE and MRPC is the layout GLUE's download script writes. For QNLI, QQP and MNLI the files the
download script writes (`glue/QNLI/train.tsv`, `glue/MNLI/dev_matched.tsv`, ...) are read when present; otherwise,
as for VitaminC, the task is trained on a seeded split of the file the offline folder has: `DERIVED_EVAL_FRACTION` of it (shuffled with `SPLIT_SEED`) is the evaluation split, the rest trains.
The split does not depend on the run's seed, so runs with different seeds see the same data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import SubnetsError

SPLIT_SEED = 2022
DERIVED_EVAL_FRACTION = 0.2

SENTIMENT = ("negative", "positive")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")
PARAPHRASE_QQP = ("not_duplicate", "duplicate")
PARAPHRASE_MRPC = ("not_equivalent", "equivalent")
FACT3 = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
FACT2 = ("SUPPORTS", "REFUTES")
HANS_LABELS = ("entailment", "non-entailment")


@dataclass(frozen=True)
class LocalSource:
    """Where a split lives under the data directory and how to read it.

    reader: "tsv" (header row; `columns` maps canonical field -> file column), "tsv_noheader" (`columns` maps
    field -> column index as a string), "lines" (`paths` are aligned one-example-per-line files, in the order
    of `columns`' keys), "json_key" (a JSON object; `key` selects the list), "jsonl", "zip_jsonl" (`key` is the
    member inside the zip). `label` names the label column; `derive` = "train"|"eval" takes that part of a
    seeded split of the file.
    """

    paths: tuple[str, ...]
    reader: str
    columns: dict[str, str]
    label: str = "label"
    key: str | None = None
    derive: str | None = None
    skip_incomplete: bool = False  # drop rows lacking a column (with a warning) instead of failing
    # Another layout of the same split: read instead when a file of this one (paths, layout_files) is absent.
    fallback: "LocalSource | None" = None
    layout_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubSource:
    """`datasets.load_dataset(path, name, split=split)`, with hub column names mapped to canonical fields."""

    path: str
    name: str | None
    split: str
    columns: dict[str, str]
    label: str = "label"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    metric: str  # "accuracy" or "f1" (weighted F1)
    local: dict[str, LocalSource]
    hub: dict[str, HubSource] = field(default_factory=dict)
    trainable: bool = True
    eval_split: str = "validation"
    model_task: str | None = None  # the training task whose classifier is evaluated here (None: itself)
    prediction_map: dict[str, str] = field(default_factory=dict)  # model label -> this set's label
    breakdown: str | None = None  # extra column to report accuracy per value x label (HANS: heuristic)
    bias_field: str | None = None  # the field a hypothesis-only / claim-only bias model reads
    user: bool = False  # read from the user's own files (absolute paths, see subnets/user_data.py)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) == 2

    @property
    def classifier_task(self) -> str:
        return self.model_task or self.name

    def source_names(self) -> str:
        return ", ".join(sorted(set(self.local) | set(self.hub)))


def _glue_hub(config: str, fields: dict[str, str], split_names: dict[str, str] | None = None) -> dict[str, HubSource]:
    split_names = split_names or {"train": "train", "validation": "validation"}
    return {ours: HubSource("nyu-mll/glue", config, theirs, fields) for ours, theirs in split_names.items()}


def _derived(path: str, reader: str, columns: dict[str, str], label: str, key: str | None = None,
             skip_incomplete: bool = False, glue: dict[str, LocalSource] | None = None) -> dict[str, LocalSource]:
    """The seeded split of one file; with `glue`, the folder GLUE's download script writes is read first and
    the seeded split is its fallback."""
    out = {}
    for part in ("train", "validation"):
        derived = LocalSource((path,), reader, columns, label, key, derive="train" if part == "train" else "eval",
                              skip_incomplete=skip_incomplete)
        out[part] = dataclasses.replace(glue[part], fallback=derived) if glue and part in glue else derived
    return out


def _glue_files(folder: str, files: dict[str, str], columns: dict[str, str], label: str,
                skip_incomplete: bool = False) -> dict[str, LocalSource]:
    """Splits as GLUE's download script writes them (`glue/<folder>/train.tsv`, ...), headers included."""
    every = tuple(f"glue/{folder}/{name}" for name in files.values())
    return {split: LocalSource((f"glue/{folder}/{name}",), "tsv", columns, label, skip_incomplete=skip_incomplete,
                               layout_files=every)
            for split, name in files.items()}


def _advglue(name: str, key: str, fields: tuple[str, ...], labels: tuple[str, ...], model_task: str) -> TaskSpec:
    config = "adv_" + key.replace("mnli-mm", "mnli_mismatched")
    return TaskSpec(
        name, fields, labels, "accuracy",
        local={"validation": LocalSource(("advglue/dev.json",), "json_key", {f: f for f in fields}, key=key)},
        hub={"validation": HubSource("AI-Secure/adv_glue", config, "validation", {f: f for f in fields})},
        trainable=False, model_task=model_task,
    )


def _fever_symmetric(name: str, paths: tuple[str, ...], evidence_column: str) -> TaskSpec:
    return TaskSpec(
        name, ("claim", "evidence"), FACT2, "accuracy",
        local={"test": LocalSource(paths, "jsonl", {"claim": "claim", "evidence": evidence_column})},
        trainable=False, eval_split="test", model_task="vitaminc", bias_field="claim",
    )


def _mnli_hard(name: str, folder: str) -> TaskSpec:
    paths = tuple(f"glue/MNLI/{folder}/{f}.test" for f in ("s1", "s2", "labels"))
    return TaskSpec(
        name, ("premise", "hypothesis"), NLI3, "accuracy",
        local={"test": LocalSource(paths, "lines", {"premise": "0", "hypothesis": "1"}, label="2")},
        trainable=False, eval_split="test", model_task="mnli", bias_field="hypothesis",
    )


_TASK_LIST: list[TaskSpec] = [
    TaskSpec(
        "sst2", ("sentence",), SENTIMENT, "accuracy",
        local={s: LocalSource((f"glue/SST-2/{f}.tsv",), "tsv", {"sentence": "sentence"})
               for s, f in (("train", "train"), ("validation", "dev"), ("test", "test_labeled"))},
        hub=_glue_hub("sst2", {"sentence": "sentence"}),
    ),
    TaskSpec(
        "rte", ("sentence1", "sentence2"), NLI2, "accuracy",
        local={s: LocalSource((f"glue/RTE/{f}.tsv",), "tsv", {"sentence1": "sentence1", "sentence2": "sentence2"})
               for s, f in (("train", "train"), ("validation", "dev"))},
        hub=_glue_hub("rte", {"sentence1": "sentence1", "sentence2": "sentence2"}), bias_field="sentence2",
    ),
    TaskSpec(
        "mrpc", ("sentence1", "sentence2"), PARAPHRASE_MRPC, "f1",
        local={s: LocalSource((f"glue/MRPC/{f}.tsv",), "tsv", {"sentence1": "#1 String", "sentence2": "#2 String"},
                              label="Quality")
               for s, f in (("train", "train"), ("validation", "dev"))},
        hub=_glue_hub("mrpc", {"sentence1": "sentence1", "sentence2": "sentence2"}),
    ),
    TaskSpec(
        "qnli", ("question", "sentence"), NLI2, "accuracy",
        local=_derived("glue/QNLI/dev.tsv", "tsv", {"question": "question", "sentence": "sentence"}, "label",
                       glue=_glue_files("QNLI", {"train": "train.tsv", "validation": "dev.tsv"},
                                        {"question": "question", "sentence": "sentence"}, "label")),
        hub=_glue_hub("qnli", {"question": "question", "sentence": "sentence"}), bias_field="sentence",
    ),
    TaskSpec(
        "qqp", ("question1", "question2"), PARAPHRASE_QQP, "f1",
        # The offline QQP pool's first line is malformed (label glued to question2, see MANIFEST.md): skipped.
        local=_derived("glue/QQP/cutoff_new_dev.tsv", "tsv_noheader", {"question1": "3", "question2": "4"}, "5",
                       skip_incomplete=True,
                       glue=_glue_files("QQP", {"train": "train.tsv", "validation": "dev.tsv"},
                                        {"question1": "question1", "question2": "question2"}, "is_duplicate",
                                        skip_incomplete=True)),
        hub=_glue_hub("qqp", {"question1": "question1", "question2": "question2"}),
    ),
    TaskSpec(
        "mnli", ("premise", "hypothesis"), NLI3, "accuracy",
        local=_derived("glue/MNLI/dev_matched_mccoy.tsv", "tsv", {"premise": "premise", "hypothesis": "hypothesis"},
                       "gold_label",
                       glue=_glue_files("MNLI", {"train": "train.tsv", "validation": "dev_matched.tsv"},
                                        {"premise": "sentence1", "hypothesis": "sentence2"}, "gold_label")),
        hub=_glue_hub("mnli", {"premise": "premise", "hypothesis": "hypothesis"},
                      {"train": "train", "validation": "validation_matched"}),
        bias_field="hypothesis",
    ),
    TaskSpec(
        "vitaminc", ("claim", "evidence"), FACT3, "accuracy",
        local=_derived("fever/vitaminc/vitaminc_real.zip", "zip_jsonl", {"claim": "claim", "evidence": "evidence"},
                       "label", key="vitaminc_real/test.jsonl"),
        hub={s: HubSource("tals/vitaminc", None, s, {"claim": "claim", "evidence": "evidence"})
             for s in ("train", "validation")},
        bias_field="claim",
    ),
    TaskSpec(
        "hans", ("premise", "hypothesis"), HANS_LABELS, "accuracy",
        local={"validation": LocalSource(("hans/heuristics_evaluation_set.tsv",), "tsv",
                                         {"premise": "sentence1", "hypothesis": "sentence2", "heuristic": "heuristic"},
                                         label="gold_label")},
        hub={"validation": HubSource("jhu-cogsci/hans", None, "validation",
                                     {"premise": "premise", "hypothesis": "hypothesis", "heuristic": "heuristic"})},
        trainable=False, model_task="mnli", breakdown="heuristic", bias_field="hypothesis",
        prediction_map={"entailment": "entailment", "neutral": "non-entailment", "contradiction": "non-entailment"},
    ),
    TaskSpec(  # SST-2's labelled test set (1,821 sentences): a held-out confirmation set, report-only
        "sst2-test", ("sentence",), SENTIMENT, "accuracy",
        local={"test": LocalSource(("glue/SST-2/test_labeled.tsv",), "tsv", {"sentence": "sentence"})},
        trainable=False, eval_split="test", model_task="sst2",
    ),
    TaskSpec(
        "paws-qqp", ("question1", "question2"), PARAPHRASE_QQP, "f1",
        local={"test": LocalSource(("paws/qqp/dev_and_test.tsv",), "tsv",
                                   {"question1": "sentence1", "question2": "sentence2"})},
        trainable=False, eval_split="test", model_task="qqp",
    ),
    _mnli_hard("mnli-hard-matched", "hard_matched"),
    _mnli_hard("mnli-hard-mismatched", "hard_mismatched"),
    _advglue("advglue-sst2", "sst2", ("sentence",), SENTIMENT, "sst2"),
    _advglue("advglue-qqp", "qqp", ("question1", "question2"), PARAPHRASE_QQP, "qqp"),
    _advglue("advglue-mnli", "mnli", ("premise", "hypothesis"), NLI3, "mnli"),
    _advglue("advglue-mnli-mm", "mnli-mm", ("premise", "hypothesis"), NLI3, "mnli"),
    _advglue("advglue-qnli", "qnli", ("question", "sentence"), NLI2, "qnli"),
    _advglue("advglue-rte", "rte", ("sentence1", "sentence2"), NLI2, "rte"),
    _fever_symmetric("fever-symmetric-v1", ("fever/symmetric_v0.1/fever_symmetric_full.jsonl",), "evidence_sentence"),
    _fever_symmetric("fever-symmetric-v2", ("fever/symmetric_v0.2/fever_symmetric_dev.jsonl",
                                            "fever/symmetric_v0.2/fever_symmetric_test.jsonl"), "evidence"),
]

TASKS: dict[str, TaskSpec] = {t.name: t for t in _TASK_LIST}


def get_task(name: str, *, trainable: bool = False) -> TaskSpec:
    """The task called `name`; with `trainable=True` it must have a train split."""
    key = name.lower().replace("_", "-")
    key = {"sst-2": "sst2", "mnli-m": "mnli"}.get(key, key)
    if key not in TASKS:
        raise SubnetsError(f"Unknown task '{name}'; expected one of: {', '.join(TASKS)}.")
    task = TASKS[key]
    if trainable and not task.trainable:
        trainable_names = ", ".join(t.name for t in _TASK_LIST if t.trainable)
        raise SubnetsError(f"Task '{task.name}' is evaluation-only; training tasks are: {trainable_names}.")
    return task
