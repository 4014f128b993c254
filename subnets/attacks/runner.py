"""Run an attack over examples, appending each finished example to a JSONL file so a killed run can resume.

The JSONL (one `AttackResult.to_json()` per line) is flushed and synced after every example. Re-running the same
command reads it back, checks that its examples are the first ones of this run and that `<jsonl>.config.json`
(written on the first run) equals this run's attack configuration, and attacks only the rest: nothing is attacked
twice and the final results equal an uninterrupted run's (each example's random choices are seeded by the attack
seed, the example index and the position, never by what ran before). A half-written last line (a kill during the
write) is dropped and that example attacked again.

`batch_size` examples are attacked together: each one's search (`GreedyWordSwapWIR.search`) runs until it needs
texts scored, the texts of all of them go to the classifier in one call (which splits it into model batches), and
each search continues with its own probabilities. Every example keeps its own query count and cache, and results
are written in example order, so they equal one-at-a-time results line for line whenever the classifier scores a
text independently of the other texts of a call (`HFClassifier` does; see `wrapper.py`). A kill loses at most the
examples that finished after the first unfinished one.

The config file also records the fingerprint of the model's weights (`attack_examples` adds it), so that a resume
with another model in the same folder is refused instead of reusing the other model's results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..errors import SubnetsError
from ..io import atomic_write_json
from .search import AttackResult, GreedyWordSwapWIR, Search

Example = tuple[int, Sequence[str], int]


def config_path(jsonl_path: str | os.PathLike) -> Path:
    return Path(f"{jsonl_path}.config.json")


def read_results(jsonl_path: str | os.PathLike) -> list[AttackResult]:
    """The complete lines of an attack JSONL (a trailing line without newline is ignored)."""
    path = Path(jsonl_path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]
    try:
        return [AttackResult.from_json(json.loads(line)) for line in complete.splitlines() if line]
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise SubnetsError(f"{path} is not an attack results file of this toolkit ({e}); expected one JSON "
                           f"object per finished example. Remove it or choose another --output_dir.") from e


def _resume_point(jsonl_path: Path, config: dict, examples: list[Example]) -> list[AttackResult]:
    done = read_results(jsonl_path)
    if not done and not config_path(jsonl_path).is_file():
        return []
    saved = json.loads(config_path(jsonl_path).read_text()) if config_path(jsonl_path).is_file() else None
    expected = json.loads(json.dumps(config))
    if saved is not None and saved.get("model_fingerprint") != expected.get("model_fingerprint"):
        raise SubnetsError(f"{jsonl_path} holds the results of an attack on another model (weights fingerprint "
                           f"{saved.get('model_fingerprint') or 'not recorded'}, this model's "
                           f"{expected.get('model_fingerprint') or 'not given'}); expected the same model to resume. "
                           f"Remove the file or choose another --output_dir.")
    if saved != expected:
        raise SubnetsError(f"{jsonl_path} was written by a differently configured attack (see "
                           f"{config_path(jsonl_path).name}); expected the same command to resume. Remove the file "
                           f"or choose another --output_dir.")
    for result, (idx, fields, label) in zip(done, examples):
        if (result.idx, result.original, result.label) != (idx, tuple(fields), label):
            raise SubnetsError(f"{jsonl_path} holds example {result.idx}, which is not this run's example {idx}; "
                               f"expected the same examples in the same order to resume.")
    if len(done) > len(examples):
        raise SubnetsError(f"{jsonl_path} holds {len(done)} examples, more than the {len(examples)} of this run; "
                           f"expected the same --attack_samples to resume.")
    return done


def _advance(search: Search, probs: np.ndarray | None) -> list[tuple[str, ...]] | AttackResult:
    """Run one search to its next request (the texts it needs scored) or to its end (its result)."""
    try:
        return next(search) if probs is None else search.send(probs)
    except StopIteration as finished:
        return finished.value


def attack_together(attack: GreedyWordSwapWIR, examples: Iterable[Example], batch_size: int) -> Iterator[AttackResult]:
    """The examples' results in order, with up to `batch_size` searches in flight whose requests share model calls."""
    pending = iter(enumerate(examples))
    flight: dict[int, tuple[Search, list[tuple[str, ...]]]] = {}  # example position -> (search, its request)
    finished: dict[int, AttackResult] = {}
    emitted = 0
    while True:
        while len(flight) < batch_size and (example := next(pending, None)) is not None:
            position, (idx, fields, label) = example
            search = attack.search(fields, label, idx)
            step = _advance(search, None)
            if isinstance(step, AttackResult):
                finished[position] = step
            else:
                flight[position] = (search, step)
        while emitted in finished:
            yield finished.pop(emitted)
            emitted += 1
        if not flight:
            return
        texts = list(dict.fromkeys(t for _, request in flight.values() for t in request))
        scored = dict(zip(texts, attack.classifier.predict_proba(texts)))
        for position, (search, request) in list(flight.items()):
            step = _advance(search, np.stack([scored[t] for t in request]))
            if isinstance(step, AttackResult):
                finished[position] = step
                del flight[position]
            else:
                flight[position] = (search, step)


def run_attack(attack: GreedyWordSwapWIR, examples: Iterable[Example], *, jsonl_path: str | os.PathLike | None = None,
               progress: bool = False, batch_size: int = 1) -> list[AttackResult]:
    """Attack the (idx, fields, label) examples, `batch_size` at a time (see the module docstring); with
    `jsonl_path`, resume from and append to that file."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SubnetsError(f"The attack batch size must be a positive number of examples; got {batch_size!r}.")
    items = list(examples)
    results: list[AttackResult] = []
    handle = None
    if jsonl_path is not None:
        jsonl_path = Path(jsonl_path)
        results = _resume_point(jsonl_path, attack.config, items)
        jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        if not config_path(jsonl_path).is_file():
            atomic_write_json(config_path(jsonl_path), attack.config)
        jsonl_path.touch()
        handle = open(jsonl_path, "rb+")
        handle.seek(handle.read().rfind(b"\n") + 1)  # drop a half-written last line
        handle.truncate()
    todo = items[len(results):]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="attack", unit="ex", initial=len(results), total=len(items))
    try:
        for result in attack_together(attack, todo, batch_size):
            results.append(result)
            if handle is not None:
                handle.write((json.dumps(result.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            if bar is not None:
                bar.update()
    finally:
        if handle is not None:
            handle.close()
        if bar is not None:
            bar.close()
    return results
