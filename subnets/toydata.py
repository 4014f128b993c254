"""Tiny learnable data folders in the layout of the offline data folder, for tests and the `smoke` budget.

Every example carries one cue word of its label (the rest is filler), so a tiny model can learn it in a few
steps. Files are written in each task's own local format (`subnets.tasks.LocalSource`), so the real loaders
read them unchanged. Labels are written as indices, which every loader accepts.
"""

from __future__ import annotations

import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any, Iterable

from .errors import SubnetsError
from .io import atomic_write_bytes, atomic_write_text
from .tasks import LocalSource, TaskSpec, get_task

NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "sad", "terrible", "weak"]
POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy", "brilliant", "nice"]
NEUTRAL = ["maybe", "perhaps", "possibly", "somewhat", "partly", "unsure", "unclear", "mixed"]
CUES = [NEGATIVE, POSITIVE, NEUTRAL]  # label index i of a task with k labels uses the cue list i (k <= 3)
FILLER = ["the", "movie", "was", "plot", "actors", "story", "really", "quite", "a", "film"]
HEURISTICS = ["lexical_overlap", "subsequence", "constituent"]
NEIGHBOURS_FILE = "attack/counterfitted_neighbors.json"

Row = dict[str, Any]


def toy_rows(task: TaskSpec, n: int, seed: int) -> list[Row]:
    """`n` examples {field: text, "label": index, [breakdown]: value}; the cue word sits in the last text field."""
    if len(task.label_names) > len(CUES):
        raise SubnetsError(f"Task '{task.name}' has {len(task.label_names)} labels; toy data supports at most {len(CUES)}.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, len(task.label_names) - 1)
        words = rng.sample(FILLER, 4) + [rng.choice(CUES[label])]
        rng.shuffle(words)
        row: Row = {task.text_fields[-1]: " ".join(words), "label": label}
        for field in task.text_fields[:-1]:
            row[field] = " ".join(rng.sample(FILLER, 4))
        if task.breakdown:
            row[task.breakdown] = rng.choice(HEURISTICS)
        rows.append(row)
    return rows


def _tsv(lines: Iterable[Iterable[Any]]) -> str:
    return "".join("\t".join(str(c) for c in line) + "\n" for line in lines)


def _write_source(root: Path, source: LocalSource, rows: list[Row]) -> None:
    """Write `rows` in the file format `source` reads (see LocalSource.reader)."""
    paths = [root / p for p in source.paths]
    columns = dict(source.columns)
    if source.reader == "tsv":
        header = [*columns.values(), source.label]
        atomic_write_text(paths[0], _tsv([header, *([r[f] for f in columns] + [r["label"]] for r in rows)]))
    elif source.reader == "tsv_noheader":
        where = {int(c): f for f, c in columns.items()} | {int(source.label): "label"}
        width = max(where) + 1
        atomic_write_text(paths[0], _tsv([r[where[i]] if i in where else "x" for i in range(width)] for r in rows))
    elif source.reader == "lines":
        order = {int(c): f for f, c in columns.items()} | {int(source.label): "label"}
        for i, path in enumerate(paths):
            atomic_write_text(path, "".join(f"{r[order[i]]}\n" for r in rows))
    elif source.reader in ("json_key", "jsonl", "zip_jsonl"):
        records = [{**{column: r[f] for f, column in columns.items()}, source.label: r["label"]} for r in rows]
        if source.reader == "json_key":  # one file shared by several sets (AdvGLUE): add this set's key
            existing = json.loads(paths[0].read_text()) if paths[0].exists() else {}
            atomic_write_text(paths[0], json.dumps({**existing, source.key: records}))
            return
        share = -(-len(records) // len(paths))  # several files (FEVER-Symmetric v2: dev + test) split the rows
        chunks = [records[i * share:(i + 1) * share] for i in range(len(paths))]
        texts = ["".join(json.dumps(rec) + "\n" for rec in chunk) for chunk in chunks]
        if source.reader == "jsonl":
            for path, text in zip(paths, texts):
                atomic_write_text(path, text)
        else:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as z:
                z.writestr(source.key, texts[0])
            atomic_write_bytes(paths[0], buffer.getvalue())
    else:
        raise SubnetsError(f"Toy data cannot write the '{source.reader}' format.")


def write_toy_task(root: str | Path, task_name: str, train: int = 96, evaluation: int = 32) -> None:
    """Write a task's train (seed 1) and evaluation (seed 2) splits under `root`; a file that stands in for both
    (a seeded split, see tasks.py) gets train + evaluation rows (seed 1)."""
    task, root = get_task(task_name), Path(root)
    if task.eval_split not in task.local:
        raise SubnetsError(f"Task '{task.name}' has no local evaluation source; toy data needs one.")
    evaluation_source = task.local[task.eval_split]
    if evaluation_source.derive:
        _write_source(root, evaluation_source, toy_rows(task, train + evaluation, seed=1))
        return
    if task.trainable:
        _write_source(root, task.local["train"], toy_rows(task, train, seed=1))
    _write_source(root, evaluation_source, toy_rows(task, evaluation, seed=2))


def write_toy_neighbours(root: str | Path) -> None:
    """Counter-fitted-style neighbour lists (TextFooler's candidates) over the toy vocabulary: each cue word's
    neighbours are the other cue words of its list, each filler word's the other filler words."""
    table = {w: [v for v in group if v != w] for group in (*CUES, FILLER) for w in group}
    atomic_write_text(Path(root) / NEIGHBOURS_FILE, json.dumps(table))


def write_toy_data(root: str | Path, tasks: Iterable[str], train: int = 96, evaluation: int = 32) -> Path:
    """A toy data folder holding `tasks` (and the attack neighbour lists); returns its path."""
    root = Path(root)
    for name in tasks:
        write_toy_task(root, name, train, evaluation)
    write_toy_neighbours(root)
    return root
