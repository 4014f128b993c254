"""Run an attack over examples, appending each finished example to a JSONL file so a killed run can resume.

The JSONL (one `AttackResult.to_json()` per line) is flushed and synced after every example. Re-running the same
command reads it back, checks that its examples are the first ones of this run and that `<jsonl>.config.json`
(written on the first run) equals this run's attack configuration, and attacks only the rest: nothing is attacked
twice and the final results equal an uninterrupted run's (each example's random choices are seeded by the attack
seed, the example index and the position, never by what ran before). A half-written last line (a kill during the
write) is dropped and that example attacked again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import SubnetsError
from ..io import atomic_write_json
from .search import AttackResult, GreedyWordSwapWIR

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
    if saved != json.loads(json.dumps(config)):
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


def run_attack(attack: GreedyWordSwapWIR, examples: Iterable[Example], *, jsonl_path: str | os.PathLike | None = None,
               progress: bool = False) -> list[AttackResult]:
    """Attack each (idx, fields, label) example in turn; with `jsonl_path`, resume from and append to that file."""
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
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="attack", unit="ex", initial=len(results), total=len(items))
    try:
        for idx, fields, label in todo:
            result = attack.attack(fields, label, idx)
            results.append(result)
            if handle is not None:
                handle.write((json.dumps(result.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        if handle is not None:
            handle.close()
    return results
