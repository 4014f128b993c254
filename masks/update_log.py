"""Per-step update masks of one selective fine-tuning run (ROSE, RoAST), appended cheaply and crash-safely.

A log is a record directory that is visible in the store from the moment it is opened (kind "update",
`complete: false`). Appends are buffered and written every `flush_every` appends as one new chunk file
(`chunk-000000.safetensors`, keys `<step>/<parameter name>`) followed by one fsync'ed line in `index.jsonl`
naming the chunk, its checksum, its steps and per-tensor update counts. Nothing written before is rewritten,
and a crash leaves every flushed chunk readable (a torn last index line is ignored). `close()` renames the
record to its content hash and records the totals.

A training run keeps the log's position in its checkpoints (`state_dict()`, which flushes first) and a resumed
run continues the same record (`UpdateLog.resume`), dropping what was logged after that checkpoint, so the
closed record equals the one an uninterrupted run writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from subnets.errors import SubnetsError
from subnets.io import atomic_write_bytes
from subnets.sparsity import count_nonzero

from .bits import check_mask_tensor, decode_masks, encode_masks
from .files import (RECORD_FILE, Staging, discard, publish, read_checked, read_record_json, records_dir, utc_now,
                    write_record_json)
from .record import FORMAT_VERSION, MaskRecord, canonical_json, content_id, sha256_hex, tensor_layout

INDEX_FILE = "index.jsonl"


class UpdateLog:
    """Append-only writer; create it with `MaskStore.open_update_log(meta)` (or `resume_update_log(state)`)."""

    def __init__(self, root: Path, directory: Path, meta: dict[str, Any], flush_every: int):
        self.root, self.directory, self.meta, self.flush_every = root, directory, meta, flush_every
        self.layout: dict[str, dict[str, Any]] | None = None
        self.buffer: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.buffer_counts: dict[str, float] = {}
        self.totals: dict[str, float] = {}
        self.steps_logged = 0
        self.last_step: int | None = None
        self.chunks = 0
        self.closed_id: str | None = None

    @classmethod
    def open(cls, root: Path, meta: dict[str, Any], *, flush_every: int = 8) -> "UpdateLog":
        """A new open log in the store at `root`, visible there at once (kind "update", complete: false)."""
        if flush_every < 1:
            raise SubnetsError(f"flush_every must be at least 1, got {flush_every}.")
        if meta.setdefault("kind", "update") != "update":
            raise SubnetsError(f"An update log has kind 'update', but meta asks for '{meta['kind']}'.")
        meta.update(format=FORMAT_VERSION, created=utc_now(), complete=False)
        provisional = sha256_hex(canonical_json(meta) + os.urandom(16))
        with Staging(root) as tmp:
            (tmp / INDEX_FILE).touch()
            write_record_json(tmp, meta)
            publish(root, tmp, provisional)
        return cls(root, records_dir(root) / provisional, meta, flush_every)

    @classmethod
    def resume(cls, root: Path, state: Mapping[str, Any], *, flush_every: int = 8) -> "UpdateLog":
        """Reopen the log a checkpoint's `state_dict()` describes; chunks flushed after that checkpoint are removed
        (the resumed run logs those steps again)."""
        directory = records_dir(root) / state["id"]
        if not directory.is_dir():
            raise SubnetsError(f"The update-mask record {state['id'][:12]} this run logs to is not in {root}; "
                               f"expected the interrupted run's open record there to resume (or a new --output_dir).")
        meta = read_record_json(directory)
        if meta.get("complete"):
            raise SubnetsError(f"The update-mask record {state['id'][:12]} is already closed; it cannot be resumed.")
        lines = (directory / INDEX_FILE).read_bytes().splitlines(keepends=True)
        chunks = state["chunks"]
        if len(lines) < chunks or (chunks and not lines[chunks - 1].endswith(b"\n")):
            raise SubnetsError(f"{directory / INDEX_FILE} lists fewer chunks than the run's checkpoint ({chunks}); "
                               f"the update-mask record is damaged.")
        if len(lines) > chunks:
            atomic_write_bytes(directory / INDEX_FILE, b"".join(lines[:chunks]))
        for chunk in directory.glob("chunk-*.safetensors"):
            if int(chunk.name.removeprefix("chunk-").removesuffix(".safetensors")) >= chunks:
                chunk.unlink()
        log = cls(root, directory, meta, flush_every)
        log.layout, log.totals, log.chunks = state["layout"], dict(state["totals"]), chunks
        log.steps_logged, log.last_step = state["steps_logged"], state["last_step"]
        return log

    def state_dict(self) -> dict[str, Any]:
        """Where the log stands, for a run's checkpoint (JSON-able). Flushes first, so that everything logged
        up to the checkpoint is on disk when the checkpoint is."""
        if self.closed_id is not None:
            raise SubnetsError(f"Update log {self.closed_id[:12]} is closed; there is no position to save.")
        self.flush()
        return {"id": self.directory.name, "chunks": self.chunks, "steps_logged": self.steps_logged,
                "totals": dict(self.totals), "last_step": self.last_step, "layout": self.layout}

    @property
    def id(self) -> str:
        """The provisional id while open, the content-hash id after `close()`."""
        return self.closed_id or self.directory.name

    def append(self, step: int, masks: Mapping[str, torch.Tensor]) -> None:
        """Log the update masks of one step: per tensor a 0-d (scalar) or element-wise mask, bool or float.

        A tensor counts as updated where its mask is non-zero. Reads the masks to the CPU (call it every N
        steps, not inside the optimizer step).
        """
        if self.closed_id is not None:
            raise SubnetsError(f"Update log {self.closed_id[:12]} is closed; open a new one to log more steps.")
        if isinstance(step, bool) or not isinstance(step, int) or (self.last_step is not None and step <= self.last_step):
            raise SubnetsError(f"Update-mask step {step!r} must be an integer above the previous one ({self.last_step}).")
        current = {name: check_mask_tensor(name, m).detach().to("cpu") for name, m in masks.items()}
        if not current:
            raise SubnetsError(f"No update masks given for step {step}; expected parameter name -> tensor entries.")
        layout = tensor_layout(current)
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            first = next((n for n in {**self.layout, **layout} if self.layout.get(n) != layout.get(n)), "?")
            raise SubnetsError(
                f"Update masks at step {step} differ from the first step at '{first}' "
                f"({layout.get(first)} vs {self.layout.get(first)}); every step must log the same tensors."
            )
        for name, mask in current.items():
            updated = count_nonzero(mask) / max(mask.numel(), 1)
            self.buffer_counts[name] = self.buffer_counts.get(name, 0.0) + updated
        self.buffer.append((step, current))
        self.last_step = step
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write buffered steps as one chunk plus one index line (called automatically every `flush_every`)."""
        if not self.buffer:
            return
        if not (self.directory / RECORD_FILE).is_file():
            raise SubnetsError(f"The update-mask record {self.id[:12]} was removed from {self.root} while this run "
                               f"logged to it (`subnets-masks rm`?), so its earlier steps are lost; expected the open "
                               f"record to stay until the run closes it (rerun with a new --output_dir).")
        name = chunk_name(self.chunks)
        data = encode_masks({f"{step}/{key}": m for step, masks in self.buffer for key, m in masks.items()})
        atomic_write_bytes(self.directory / name, data)
        entry = {
            "file": name,
            "sha256": sha256_hex(data),
            "bytes": len(data),
            "steps": [step for step, _ in self.buffer],
            "counts": self.buffer_counts,
        }
        with open(self.directory / INDEX_FILE, "a", encoding="utf-8") as index:
            index.write(json.dumps(entry, sort_keys=True) + "\n")
            index.flush()
            os.fsync(index.fileno())
        for key, value in self.buffer_counts.items():
            self.totals[key] = self.totals.get(key, 0.0) + value
        self.steps_logged += len(self.buffer)
        self.chunks += 1
        self.buffer, self.buffer_counts = [], {}

    def close(self, announce: Callable[[str], None] | None = None) -> str:
        """Flush, record per-tensor update counts, rename to the content-hash id and return it.

        `announce(id)` is called with the final id before the rename, so that a writer killed in between can
        find the closed record (a run writes it beside its checkpoints)."""
        if self.closed_id is not None:
            return self.closed_id
        self.flush()
        index_bytes = (self.directory / INDEX_FILE).read_bytes()
        entries = read_index(self.directory)
        problem = index_problem(entries, self.steps_logged)
        if problem is not None:
            raise SubnetsError(f"The update-mask record {self.id[:12]} cannot be closed: {problem}; it stays "
                               f"incomplete (`subnets-masks verify` reports it).")
        files = {INDEX_FILE: {"sha256": sha256_hex(index_bytes), "bytes": len(index_bytes)}}
        for entry in entries:
            files[entry["file"]] = {"sha256": entry["sha256"], "bytes": entry["bytes"]}
        self.meta.update(summary(self.layout, self.totals, self.steps_logged))
        self.meta["files"] = files
        self.meta["complete"] = True
        record_id = content_id(self.meta, {name: f["sha256"] for name, f in files.items()})
        final = records_dir(self.root) / record_id
        if announce is not None:
            announce(record_id)
        if final.exists():  # an identical run already logged the same content: keep that record
            discard(self.root, self.directory)
        else:
            os.rename(self.directory, final)
            write_record_json(final, self.meta)
        self.directory, self.closed_id = final, record_id
        return record_id

    def __enter__(self) -> "UpdateLog":
        return self

    def __exit__(self, exc_type: type | None, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # keep what was logged; the record stays marked incomplete
            self.flush()


def summary(layout: Mapping[str, Any] | None, totals: Mapping[str, float], steps_logged: int) -> dict[str, Any]:
    """The record fields derived from the log: tensors, update_counts (per tensor) and steps_logged.

    update_counts[name] = sum over logged steps of the fraction of the tensor's entries that were updated
    (for a scalar mask: the number of logged steps in which the tensor was updated).
    """
    return {"tensors": dict(layout or {}), "update_counts": dict(totals), "steps_logged": steps_logged}


def chunk_name(number: int) -> str:
    return f"chunk-{number:06d}.safetensors"


def index_problem(entries: list[dict[str, Any]], steps_logged: int | None) -> str | None:
    """What is wrong with a log's index, or None: its chunks must be numbered from 0 without a gap and, where the
    number of logged steps is known (a closed record's metadata, a writer's count), hold exactly that many."""
    for number, entry in enumerate(entries):
        if entry.get("file") != chunk_name(number):
            return f"chunk {chunk_name(number)} is missing from its index (found {entry.get('file')})"
    steps = sum(len(entry["steps"]) for entry in entries)
    if steps_logged is not None and steps != steps_logged:
        return f"its chunks hold {steps} steps, its metadata claims {steps_logged}"
    return None


def read_index(directory: Path) -> list[dict[str, Any]]:
    """The index entries; a torn last line (a crash during its write) is ignored, damage elsewhere is an error."""
    lines = (directory / INDEX_FILE).read_text(encoding="utf-8").splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entries.append(json.loads(line))
        except ValueError as e:
            if number == len(lines):
                break
            raise SubnetsError(f"{directory / INDEX_FILE} line {number} is damaged; run `subnets-masks verify`.") from e
    return entries


def recovered_meta(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """For a log that was never closed, fill in tensors, counts and steps from its index (in memory only)."""
    if meta.get("complete"):
        return meta
    entries = read_index(directory)
    totals: dict[str, float] = {}
    for entry in entries:
        for key, value in entry["counts"].items():
            totals[key] = totals.get(key, 0.0) + value
    layout = None
    if entries:
        first_step = entries[0]["steps"][0]
        data = read_checked(directory / entries[0]["file"], entries[0])
        layout = {
            key.split("/", 1)[1]: value
            for key, value in tensor_layout(decode_masks(data)).items()
            if key.startswith(f"{first_step}/")
        }
    return {**meta, **summary(layout, totals, sum(len(e["steps"]) for e in entries))}


def iter_steps(directory: Path) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Every logged (step, masks) pair in order, each chunk checked against its checksum."""
    for entry in read_index(directory):
        decoded = decode_masks(read_checked(directory / entry["file"], entry))
        by_step: dict[int, dict[str, torch.Tensor]] = {step: {} for step in entry["steps"]}
        for key, mask in decoded.items():
            step, name = key.split("/", 1)
            by_step[int(step)][name] = mask
        yield from by_step.items()


def update_frequency(directory: Path) -> dict[str, torch.Tensor]:
    """Per element (or per tensor, for scalar masks): the fraction of logged steps with a non-zero mask."""
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for _, masks in iter_steps(directory):
        for name, mask in masks.items():
            sums[name] = sums.get(name, 0) + (mask != 0).float()
        count += 1
    return {name: total / count for name, total in sums.items()}


def verify_update_record(directory: Path, meta: Mapping[str, Any], record_id: str) -> str | None:
    """The problem with an update-mask record, or None. An unclosed log is fine if its chunks check out."""
    entries = read_index(directory)
    for entry in entries:
        decode_masks(read_checked(directory / entry["file"], entry))
    problem = index_problem(entries, meta["steps_logged"] if meta.get("complete") else None)
    if problem is not None:
        return problem
    if not meta.get("complete"):
        return None
    for name, expected in meta["files"].items():
        read_checked(directory / name, expected)
    expected_id = content_id(meta, {name: f["sha256"] for name, f in meta["files"].items()})
    return None if expected_id == record_id else "the id does not match the record's content"


class UpdateLogFormat:
    """Update-mask logs (kind "update", see `subnets.masks.store.FORMATS`); written by `UpdateLog`."""

    def record(self, directory: Path, meta: dict[str, Any]) -> MaskRecord:
        """The record (an unclosed log's fields recovered from its index); `masks` is the update frequency."""
        return MaskRecord(directory.name, recovered_meta(directory, meta), lambda: update_frequency(directory),
                          lambda: iter_steps(directory))

    def verify(self, directory: Path, meta: Mapping[str, Any]) -> str | None:
        return verify_update_record(directory, meta, directory.name)


UPDATE_LOGS = UpdateLogFormat()
