"""The mask store: a directory of content-addressed records shared by every stage.

Layout: `<root>/records/<id>/record.json` (metadata with its own checksum and the checksum of every data file)
plus the data: `masks.safetensors` for tickets and states, `index.jsonl` + `chunk-*.safetensors` for update-mask
logs. A record is assembled in `<root>/tmp/` and renamed into place as a whole, so readers and concurrent writers
only ever see complete records; two writers of the same content race harmlessly for the same id.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from subnets.errors import SubnetsError
from subnets.io import atomic_write_bytes, check_writable_dir, make_temp_dir

from .bits import decode_masks, encode_masks
from .record import (
    FORMAT_VERSION,
    MaskRecord,
    canonical_json,
    content_id,
    infer_kind,
    sha256_hex,
    sparsity_meta,
    tensor_layout,
    validate_user_meta,
)

ROOT_ENV = "SUBNETS_MASK_STORE"
DEFAULT_ROOT = "masks_store"
RECORD_FILE = "record.json"
MASK_FILE = "masks.safetensors"
MIN_PREFIX = 4


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_record_json(directory: Path, meta: Mapping[str, Any]) -> None:
    """record.json = {"record": meta, "sha256": checksum of the canonical meta} (atomically replaced)."""
    body = {"record": dict(meta), "sha256": sha256_hex(canonical_json(meta))}
    atomic_write_bytes(directory / RECORD_FILE, json.dumps(body, indent=1, sort_keys=True).encode() + b"\n")


def read_record_json(directory: Path) -> dict[str, Any]:
    path = directory / RECORD_FILE
    try:
        body = json.loads(path.read_bytes())
        meta = body["record"]
        ok = body["sha256"] == sha256_hex(canonical_json(meta))
    except FileNotFoundError as e:
        raise SubnetsError(f"Record {directory.name[:12]} has no {RECORD_FILE}; the record is incomplete.") from e
    except (ValueError, KeyError, TypeError) as e:
        raise SubnetsError(f"{path} is damaged (not the JSON the store writes); run `subnets-masks verify`.") from e
    if not ok:
        raise SubnetsError(f"{path} fails its checksum (edited or corrupted); run `subnets-masks verify`.")
    return meta


def read_checked(path: Path, expected: Mapping[str, Any]) -> bytes:
    """The bytes of a data file, after checking size and sha256 against the record."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise SubnetsError(f"{path} is missing; the record is damaged.") from e
    if len(data) != expected["bytes"]:
        raise SubnetsError(f"{path} has {len(data)} bytes, the record says {expected['bytes']}: the file is truncated or damaged.")
    if sha256_hex(data) != expected["sha256"]:
        raise SubnetsError(f"{path} fails its sha256 checksum: the file is corrupted.")
    return data


def check_store_root(root: str | os.PathLike) -> None:
    """Refuse, before any work, a store root that is a file, lies under a file or cannot be written."""
    check_writable_dir(root, "Mask store")


def store_root(option: str | os.PathLike | None = None) -> Path:
    """The mask store root shared by every stage and the CLI: the option, else $SUBNETS_MASK_STORE, else ./masks_store."""
    return Path(option or os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


class MaskStore:
    """Masks of every stage under one root directory. See docs/masks.md."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.records_dir = self.root / "records"

    # ---- writing -------------------------------------------------------------------------------------------
    def put(self, masks: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> str:
        """Store a binary ticket (bool tensors) or a real-valued state (float tensors); returns the record id."""
        if not masks:
            raise SubnetsError("Cannot store an empty mask dict; expected parameter name -> tensor entries.")
        record = validate_user_meta(meta)
        data = encode_masks(masks)
        record["kind"] = infer_kind(masks, record.get("kind"))
        record["format"] = FORMAT_VERSION
        record["tensors"] = tensor_layout(masks)
        record["sparsity"] = sparsity_meta(masks) if record["kind"] == "ticket" else None
        record["files"] = {MASK_FILE: {"sha256": sha256_hex(data), "bytes": len(data)}}
        record["created"] = utc_now()
        record_id = content_id(record, {MASK_FILE: record["files"][MASK_FILE]["sha256"]})
        if (self.records_dir / record_id).is_dir():
            return record_id
        with self.staging_dir() as tmp:
            (tmp / MASK_FILE).write_bytes(data)
            write_record_json(tmp, record)
            self.publish(tmp, record_id)
        return record_id

    def open_update_log(self, meta: Mapping[str, Any] | None = None, *, flush_every: int = 8) -> "UpdateLog":
        """Start one update-mask record for a run (ROSE / RoAST); see `masks.update_log.UpdateLog`."""
        from .update_log import UpdateLog

        return UpdateLog.open(self, validate_user_meta(meta), flush_every=flush_every)

    def staging_dir(self) -> "_Staging":
        return _Staging(self.root / "tmp")

    def publish(self, staged: Path, record_id: str) -> bool:
        """Rename a staged record directory into place; False if a record with this id already exists."""
        self.records_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, self.records_dir / record_id)
            return True
        except OSError:
            if (self.records_dir / record_id).is_dir():  # the same content was published concurrently
                return False
            raise

    def remove(self, record_id: str) -> str:
        """Delete a record (an abbreviated id is accepted); returns the full id."""
        full = self.resolve(record_id)
        trash = self.root / "tmp" / f"rm-{full}-{os.getpid()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.records_dir / full, trash)  # disappears atomically, then is cleaned up
        shutil.rmtree(trash, ignore_errors=True)
        return full

    # ---- reading -------------------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        if not self.records_dir.is_dir():
            return []
        return sorted(p.name for p in self.records_dir.iterdir() if p.is_dir())

    def resolve(self, prefix: str) -> str:
        """The full id for an id or an unambiguous prefix of at least 4 hex digits, like git."""
        prefix = prefix.strip().lower()
        if len(prefix) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in prefix):
            raise SubnetsError(f"'{prefix}' is not a record id; expected at least {MIN_PREFIX} hex digits of one.")
        matches = [i for i in self.ids() if i.startswith(prefix)]
        if not matches:
            raise SubnetsError(f"No record in {self.root} has an id starting with '{prefix}'.")
        if len(matches) > 1:
            raise SubnetsError(f"Id prefix '{prefix}' is ambiguous ({len(matches)} records match); give more digits.")
        return matches[0]

    def meta(self, record_id: str) -> dict[str, Any]:
        """The metadata of a record, checked against its checksum (no tensors are read)."""
        return read_record_json(self.records_dir / self.resolve(record_id))

    def get(self, record_id: str) -> MaskRecord:
        """The record with this (possibly abbreviated) id; its masks load on first access, checksums verified."""
        full = self.resolve(record_id)
        return self._record(full, read_record_json(self.records_dir / full))

    def _read_tolerantly(self, record_id: str, read: Callable[[Path], Any]) -> tuple[Any, str | None]:
        """`read(record directory)` for a store that other processes may be writing to: (result, None), or
        (None, problem) for a record that cannot be read, or (None, None) for one that vanished meanwhile (an
        update log being closed or a record being removed). A failure on a record that is still there is retried
        once (an open update log may have been resumed meanwhile)."""
        directory = self.records_dir / record_id
        problem = None
        for _ in range(2):
            try:
                return read(directory), None
            except (SubnetsError, OSError, ValueError, KeyError, TypeError) as e:
                if not directory.is_dir():
                    return None, None
                problem = str(e) if isinstance(e, SubnetsError) else f"{e.__class__.__name__}: {e}"
        return None, problem

    def scan(self, **filters: Any) -> tuple[list[MaskRecord], dict[str, str]]:
        """(records matching every filter, oldest first; {id: problem} of the records that could not be read).

        Filters: any metadata field by equality (task, method, model, kind, seed, parent, ...), plus
        `min_sparsity` / `max_sparsity` on the actual global sparsity (records without one never match these).
        Records that vanish while the store is read (closed update logs, removed records) are left out.
        """
        low, high = filters.pop("min_sparsity", None), filters.pop("max_sparsity", None)

        def wanted(meta: dict[str, Any]) -> bool:
            if any(meta.get(key) != value for key, value in filters.items() if value is not None):
                return False
            sparsity = (meta.get("sparsity") or {}).get("global")
            if (low is not None or high is not None) and sparsity is None:
                return False
            return not ((low is not None and sparsity < low) or (high is not None and sparsity > high))

        def read(directory: Path) -> MaskRecord | None:
            meta = read_record_json(directory)
            return self._record(directory.name, meta) if wanted(meta) else None

        found, skipped = [], {}
        for record_id in self.ids():
            record, problem = self._read_tolerantly(record_id, read)
            if problem is not None:
                skipped[record_id] = problem
            elif record is not None:
                found.append(record)
        return sorted(found, key=lambda r: (r.meta.get("created", ""), r.id)), skipped

    def list(self, **filters: Any) -> list[MaskRecord]:
        """Records matching every filter, oldest first; unreadable records are skipped (see `scan`, `verify`)."""
        return self.scan(**filters)[0]

    def unreadable(self) -> list[str]:
        """Ids of records that cannot be read (so that `list` can say it skipped them)."""
        return sorted(self.scan()[1])

    def verify(self, record_id: str | None = None) -> list[dict[str, Any]]:
        """Check checksums (and the content id) of one record or all: [{"id", "ok", "problem"}].

        Records that vanish while they are checked (an update log being closed, a record being removed) are left
        out; a damaged record is reported, and the others are still checked.
        """
        from .update_log import verify_update_record

        def check(directory: Path) -> str | None:
            meta = read_record_json(directory)
            if meta["kind"] == "update":
                return verify_update_record(directory, meta, directory.name)
            decode_masks(read_checked(directory / MASK_FILE, meta["files"][MASK_FILE]))
            expected = content_id(meta, {MASK_FILE: meta["files"][MASK_FILE]["sha256"]})
            return None if expected == directory.name else "the id does not match the record's content"

        results = []
        for full in [self.resolve(record_id)] if record_id else self.ids():
            problem, unreadable = self._read_tolerantly(full, check)
            problem = problem or unreadable
            if problem is None and not (self.records_dir / full).is_dir():
                continue  # vanished while it was checked
            results.append({"id": full, "ok": problem is None, "problem": problem})
        return results

    def _record(self, record_id: str, meta: dict[str, Any]) -> MaskRecord:
        directory = self.records_dir / record_id
        if meta["kind"] == "update":
            from .update_log import iter_steps, recovered_meta, update_frequency

            meta = recovered_meta(directory, meta)
            return MaskRecord(record_id, meta, lambda: update_frequency(directory), lambda: iter_steps(directory))
        return MaskRecord(record_id, meta, lambda: decode_masks(read_checked(directory / MASK_FILE, meta["files"][MASK_FILE])))


class _Staging:
    """A fresh directory under `<root>/tmp/`, removed on exit unless it was published (renamed away)."""

    def __init__(self, parent: Path):
        self.parent = parent

    def __enter__(self) -> Path:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.path = make_temp_dir(self.parent, prefix="stage-")
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

