"""Loading task splits from a local data directory or the hub, tokenisation, dynamic-padding batches."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no datasets nor model classes
    import datasets
    from transformers import PreTrainedTokenizerBase
import numpy as np
from transformers.utils import logging
import torch

from .errors import SubnetsError
from .tasks import DERIVED_EVAL_FRACTION, SPLIT_SEED, HubSource, LocalSource, TaskSpec

DATA_DIR_ENV = "SUBNETS_DATA_DIR"
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")

csv.field_size_limit(sys.maxsize)
logger = logging.get_logger("subnets")


def default_data_dir() -> str | None:
    """The data directory from the environment variable SUBNETS_DATA_DIR (None: use the hub)."""
    return os.environ.get(DATA_DIR_ENV) or None


Rows = list[dict[str, Any]]


# Every reader decodes "utf-8-sig" (a leading byte-order mark is dropped, as in GLUE's MRPC train.tsv) and accepts
# CRLF line ends. GLUE, PAWS and HANS TSVs are read with no quoting: a quote character is a literal part of the text.
ENCODING = "utf-8-sig"


def _read_tsv(path: Path, header: bool) -> Rows:
    with open(path, encoding=ENCODING, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = list(reader)
    if not header:
        return [{str(i): v for i, v in enumerate(r)} for r in rows if r]
    names = rows[0]
    return [dict(zip(names, r)) for r in rows[1:] if r]


def _read_lines(paths: list[Path]) -> Rows:
    columns = [_lines(p.read_text(encoding=ENCODING)) for p in paths]
    if len({len(c) for c in columns}) != 1:
        raise SubnetsError(f"Aligned files {', '.join(map(str, paths))} have different line counts; expected one example per line in each.")
    return [{str(i): v for i, v in enumerate(vals)} for vals in zip(*columns)]


def _lines(text: str) -> list[str]:
    """Lines split at LF or CRLF only (str.splitlines would also split at U+2028 and other characters that may
    occur inside a text)."""
    return text.replace("\r\n", "\n").rstrip("\n").split("\n")


def _read_jsonl_text(text: str) -> Rows:
    return [json.loads(line) for line in _lines(text) if line.strip()]


def _read_local(root: Path, source: LocalSource) -> Rows:
    paths = [root / p for p in source.paths]
    for p in paths:
        if not p.is_file():
            raise SubnetsError(f"Data file {p} not found; expected the layout of the offline data folder "
                               f"(e.g. glue/SST-2/train.tsv) under --data_dir {root}.")
        if p.stat().st_size == 0:
            raise SubnetsError(f"Data file {p} is empty (0 bytes); expected a {source.reader} file with examples.")
    try:
        if source.reader == "tsv":
            return [row for p in paths for row in _read_tsv(p, header=True)]
        if source.reader == "tsv_noheader":
            return [row for p in paths for row in _read_tsv(p, header=False)]
        if source.reader == "lines":
            return _read_lines(paths)
        if source.reader == "json_key":
            return json.loads(paths[0].read_text(encoding=ENCODING))[source.key]
        if source.reader == "jsonl":
            return [row for p in paths for row in _read_jsonl_text(p.read_text(encoding=ENCODING))]
        if source.reader == "zip_jsonl":
            with zipfile.ZipFile(paths[0]) as z:
                return _read_jsonl_text(z.read(source.key).decode(ENCODING))
        if source.reader in USER_FORMATS.values():
            return read_user_file(paths[0], source.reader)
    except (json.JSONDecodeError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise SubnetsError(f"Could not read {paths[0]} as {source.reader} ({e.__class__.__name__}: {e}).") from e
    raise ValueError(f"unknown reader {source.reader}")


USER_FORMATS = {".csv": "user_csv", ".tsv": "user_tsv", ".jsonl": "user_json", ".json": "user_json"}


def read_user_file(path: Path, reader: str) -> Rows:
    """A user's CSV (standard quoting), TSV (no quoting, as GLUE's) or JSON-lines file, read with `datasets`;
    CSV and TSV cells stay strings exactly as written (no NA or number conversion)."""
    import datasets

    kind = {"user_csv": "CSV", "user_tsv": "TSV", "user_json": "JSON lines"}[reader]
    options: dict[str, Any] = {}
    try:
        if reader in ("user_csv", "user_tsv"):
            sep = "\t" if reader == "user_tsv" else ","
            quoting = csv.QUOTE_NONE if reader == "user_tsv" else csv.QUOTE_MINIMAL
            with open(path, encoding=ENCODING, newline="") as f:
                lines = csv.reader(f, delimiter=sep, quoting=quoting)
                header, first_row = next(lines, None), next(lines, None)
            if not header:
                raise SubnetsError(f"{path} is empty; expected a header row naming the columns, then one example "
                                   f"per row.")
            if first_row is None:
                return []  # a header and no example: reported by the caller
            options = dict(sep=sep, quoting=quoting, keep_default_na=False, na_filter=False, encoding=ENCODING,
                           features=datasets.Features({name: datasets.Value("string") for name in header}))
        elif path.stat().st_size == 0:
            raise SubnetsError(f"{path} is empty; expected one JSON object per line.")
        ds = datasets.load_dataset("json" if reader == "user_json" else "csv", data_files=str(path), split="train",
                                   **options)
    except UnicodeDecodeError as e:
        raise SubnetsError(f"{path} is not UTF-8 text ({e.reason}); expected a UTF-8 {kind} file (convert it, e.g. "
                           f"with `iconv -f latin1 -t utf-8`).") from e
    except SubnetsError:
        raise
    except Exception as e:  # csv, pandas and pyarrow raise many types for malformed files
        raise SubnetsError(f"Could not read {path} as {kind} ({e.__class__.__name__}: {str(e)[:200]}).") from e
    return ds.to_list()


def _is_missing(value: Any) -> bool:
    """An empty or NaN cell (a JSON null, a float NaN, or the text '' or 'nan' in any case)."""
    return value is None or (isinstance(value, float) and value != value) or str(value).strip().lower() in ("", "nan")


def check_labels_present(rows: Rows, label: str, where: str) -> None:
    """Refuse rows whose label cell is empty or NaN, naming them (examples counted from 1, a header not counted)."""
    missing = [i + 1 for i, r in enumerate(rows) if label in r and _is_missing(r[label])]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise SubnetsError(f"Label column '{label}' of {where} is empty or NaN in example row(s) {shown} (the first "
                           f"example is row 1); expected a label in every row.")


def _label_index(value: Any, task: TaskSpec, where: str) -> int:
    """Map a label given as an index or a name to its index in the task's label set."""
    names = task.label_names
    text = str(value).strip()
    if text.lstrip("-").isdigit() and int(text) in range(len(names)):
        return int(text)
    lowered = {n.lower(): i for i, n in enumerate(names)}
    if text.lower() in lowered:
        return lowered[text.lower()]
    raise SubnetsError(f"Label '{value}' in {where} is not a label of task '{task.name}'; "
                       f"expected one of {list(names)} or an index 0..{len(names) - 1}.")


def _to_dataset(rows: Rows, columns: dict[str, str], label: str, task: TaskSpec, where: str) -> datasets.Dataset:
    import datasets

    data: dict[str, list] = {"idx": list(range(len(rows)))}
    for field, column in columns.items():
        try:
            data[field] = [("" if r[column] is None else str(r[column])).strip() for r in rows]
        except KeyError as e:
            raise SubnetsError(f"Column '{column}' (field '{field}') is missing in {where}; "
                               f"found columns {sorted(rows[0]) if rows else []}.") from e
    check_labels_present(rows, label, where)
    try:
        data["label"] = [_label_index(r[label], task, where) for r in rows]
    except KeyError as e:
        raise SubnetsError(f"Label column '{label}' is missing in {where}; found columns {sorted(rows[0])}.") from e
    return datasets.Dataset.from_dict(data)


def _derive(ds: datasets.Dataset, part: str) -> datasets.Dataset:
    """The seeded train/eval split of a file that stands in for a missing train split (see tasks.py)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ds))
    n_eval = int(round(DERIVED_EVAL_FRACTION * len(ds)))
    chosen = order[:n_eval] if part == "eval" else order[n_eval:]
    return ds.select(np.sort(chosen))


def _load_hub(source: HubSource, task: TaskSpec) -> datasets.Dataset:
    import datasets

    try:
        raw = datasets.load_dataset(source.path, source.name, split=source.split)
    except Exception as e:  # the hub raises many types (connection, missing config, offline mode)
        raise SubnetsError(f"Could not load task '{task.name}' from the hub ({source.path}, {source.split}): "
                           f"{e.__class__.__name__}; pass --data_dir with a local copy instead.") from e
    label_feature = raw.features.get(source.label)
    rows = raw.to_list()
    if isinstance(label_feature, datasets.ClassLabel):
        for r in rows:
            r[source.label] = label_feature.int2str(r[source.label]) if r[source.label] >= 0 else r[source.label]
    return _to_dataset(rows, source.columns, source.label, task, f"{source.path}:{source.split}")


def _pick_source(root: Path, source: LocalSource) -> LocalSource:
    """The first layout of a split whose files are all present (the last one when none is: it names the file)."""
    while source.fallback is not None and not all((root / p).is_file() for p in (*source.paths, *source.layout_files)):
        source = source.fallback
    return source


def _load_local(root: Path, task: TaskSpec, split: str) -> datasets.Dataset:
    if split not in task.local:
        if task.user:
            raise SubnetsError(f"Task '{task.name}' has no '{split}' split; expected --{split}_file.")
        raise SubnetsError(f"Task '{task.name}' has no '{split}' split in a local data directory; "
                           f"available: {', '.join(task.local)}.")
    source = _pick_source(root, task.local[split])
    rows = _read_local(root, source)
    if source.skip_incomplete:
        needed = [*source.columns.values(), source.label]
        complete = [r for r in rows if all(r.get(c) not in (None, "") for c in needed)]
        if len(complete) < len(rows):
            logger.warning(f"{root / source.paths[0]}: skipped {len(rows) - len(complete)} incomplete rows.")
        rows = complete
    if not rows:
        raise SubnetsError(f"{root / source.paths[0]} has no examples; expected at least one row.")
    ds = _to_dataset(rows, source.columns, source.label, task, str(root / source.paths[0]))
    return _derive(ds, source.derive) if source.derive else ds


def load_split(task: TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> datasets.Dataset:
    """One split of a task as a Dataset with columns `idx`, the task's text fields (plus extras) and `label`.

    A user task reads its own files; otherwise `data_dir` None means the hub. `idx` is the example's position
    in the split, the id debiasing caches join on.
    """
    if task.user:
        return _load_local(Path("/"), task, split)  # its paths are absolute
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise SubnetsError(f"Data directory {root} does not exist; expected a folder laid out like the offline "
                               f"data folder (glue/, hans/, ...) or no --data_dir to use the hub.")
        return _load_local(root, task, split)
    if split not in task.hub:
        raise SubnetsError(f"Task '{task.name}' has no hub source for split '{split}'; pass --data_dir with a local "
                           f"copy (see the data folder's MANIFEST.md).")
    return _load_hub(task.hub[split], task)


def split_files(task: TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The local files `load_split` reads for a split (none when it reads the hub or the task lacks the split)."""
    if (not task.user and data_dir is None) or split not in task.local:
        return []
    root = Path("/") if task.user else Path(data_dir)
    return [root / p for p in _pick_source(root, task.local[split]).paths]


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_hashes(task: TaskSpec, splits: Iterable[str], data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """{absolute path: sha256 of its content} of the local files the splits read (a run records them, so that a
    resume notices a changed file)."""
    hashes = {}
    for split in splits:
        for path in split_files(task, split, data_dir):
            if path.is_file():
                stat = path.stat()
                hashes[str(path.resolve())] = _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return hashes


def subsample(ds: datasets.Dataset, n: int | None, *, shuffle: bool) -> datasets.Dataset:
    """The first `n` examples (evaluation) or a fixed seeded sample of `n` (training); the seed is SPLIT_SEED,
    so every run and seed trains on the same subset."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise SubnetsError(f"A sample size must be positive; got {n}.")
    if shuffle:
        return ds.select(np.sort(np.random.default_rng(SPLIT_SEED).permutation(len(ds))[:n]))
    return ds.select(range(n))


# Tasks whose training rows are the phrases of parse trees (SST-2 train holds every phrase of its sentences):
# their validation split holds whole sentences, and every phrase inside one of them leaves training
PHRASE_TASKS = ("sst2",)


def _sentences_and_phrases(texts: Sequence[str]) -> tuple[list[str], dict[str, set[str]]]:
    """For phrase-tree data: the distinct texts that are whole sentences (contained in no other text, as a
    contiguous run of words), and per distinct text the other texts it contains."""
    distinct = set(texts)
    inside = {text: {span for i in range(len(words)) for j in range(i + 1, len(words) + 1)
                     if (span := " ".join(words[i:j])) in distinct and span != text}
              for text in sorted(distinct) for words in [text.split()]}
    contained = set().union(*inside.values()) if inside else set()
    return [text for text in sorted(distinct) if text not in contained], inside


def validation_split(ds: datasets.Dataset, task: TaskSpec, percentage: int,
                     seed: int = SPLIT_SEED) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """(training rows, validation rows, a description) of a training split with `percentage`% held out for model
    selection, seeded and grouped so that related rows never straddle it: rows sharing their first text (an MNLI
    premise, an RTE text) form one group, drawn whole until the share is reached; for phrase-tree tasks
    (PHRASE_TASKS) the groups are whole sentences, `percentage`% of them, and every training phrase inside a held-out
    sentence is dropped from training."""
    if not 0 < percentage < 100:
        raise SubnetsError(f"--validation_split_percentage {percentage} is out of range; expected a percentage of "
                           f"the training data between 1 and 99 (0 selects on the task's evaluation split).")
    rng = np.random.default_rng(seed)
    texts = ds[task.text_fields[0]]
    if task.name in PHRASE_TASKS:
        sentences, inside = _sentences_and_phrases(texts)
        chosen = {sentences[i] for i in rng.permutation(len(sentences))[:max(1, round(len(sentences) * percentage
                                                                                      / 100))]}
        dropped = chosen.union(*(inside[text] for text in chosen))
        first = {text: i for i, text in reversed(list(enumerate(texts)))}  # one row per held-out sentence
        held = sorted(first[text] for text in chosen)
        kept = [i for i, text in enumerate(texts) if text not in dropped]
        how = (f"{percentage}% of the training sentences ({len(held)} texts contained in no other, seed {seed}); "
               f"the {len(dropped) - len(chosen)} phrases inside them left training")
        return ds.select(kept), ds.select(held), how
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text, []).append(i)
    order, held, target = rng.permutation(len(groups)), [], len(ds) * percentage / 100
    members = list(groups.values())
    for g in order:
        if len(held) >= target:
            break
        held += members[g]
    chosen = set(held)
    how = (f"{percentage}% of the training rows ({len(held)}, seed {seed}), grouped by "
           f"{task.text_fields[0]} ({len(groups)} groups)")
    return ds.select([i for i in range(len(ds)) if i not in chosen]), ds.select(sorted(held)), how


def selection_split(task: TaskSpec, percentage: int) -> str:
    """Which split picks checkpoint-best (and feeds every evaluation during training), as run_config.json says."""
    if not percentage:
        return f"the task's {task.eval_split} split"
    return f"validation_split({percentage}%, seed {SPLIT_SEED}) of the training split"


def tokenize(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, max_seq_length: int = 128,
             *, pad_to_max_length: bool = False) -> datasets.Dataset:
    """Tokenise the task's text fields (pairs as pairs), truncating to `max_seq_length`; padding happens per batch.

    `max_seq_length` is checked against the tokenizer's `model_max_length` (`models.load_classifier` sets it to the
    model's position limit)."""
    limit = tokenizer.model_max_length
    if not 1 <= max_seq_length <= limit:
        raise SubnetsError(f"max_seq_length {max_seq_length} is out of range; expected 1 to {limit}, the positions "
                           f"of model {tokenizer.name_or_path}.")
    fields = task.text_fields

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in fields]
        return tokenizer(*texts, truncation=True, max_length=max_seq_length,
                         padding="max_length" if pad_to_max_length else False)

    # datasets would fingerprint `encode` by pickling the whole tokenizer (about a second per call); a digest of
    # what the output depends on names it just as well
    identity = [ds._fingerprint, tokenizer.name_or_path, len(tokenizer), type(tokenizer).__name__, list(fields),
                max_seq_length, pad_to_max_length]
    fingerprint = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    out = ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c not in ("idx", "label")],
                 desc=f"tokenize {task.name}", load_from_cache_file=False, new_fingerprint=fingerprint)
    return out.rename_column("label", "labels")


class Collator:
    """Pads a list of tokenised examples to the longest one (dynamic padding) and stacks labels and ids."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = [{k: f[k] for k in MODEL_INPUT_KEYS if k in f} for f in features]
        batch = dict(self.tokenizer.pad(inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                        return_tensors="pt"))
        for key in ("labels", "idx"):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        return batch


def rows(ds: datasets.Dataset, indices: Iterable[int]) -> list[dict[str, Any]]:
    """Examples at `indices` as a list of dicts (one columnar read, then transposed)."""
    columns = ds[list(indices)]
    keys = list(columns)
    return [dict(zip(keys, vals)) for vals in zip(*(columns[k] for k in keys))]


BatchFn = Callable[[list[int]], dict[str, torch.Tensor]]


def batch_reader(ds: datasets.Dataset, collator: Collator) -> BatchFn:
    keep = [c for c in ds.column_names if c in (*MODEL_INPUT_KEYS, "labels", "idx")]
    view = ds.select_columns(keep).with_format(None)
    return lambda indices: collator(rows(view, indices))
