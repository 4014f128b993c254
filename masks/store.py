"""The mask store: a directory of content-addressed records shared by every stage.

Layout: `<root>/records/<id>/record.json` (metadata with its own checksum and the checksum of every data file,
`subnets.masks.files`) plus the data of the record's format, chosen by its kind from `FORMATS`: `masks.safetensors` for
tickets and states (`subnets.masks.mask_file`), `index.jsonl` + `chunk-*.safetensors` for update-mask logs
(`subnets.masks.update_log`). A record is assembled in `<root>/tmp/` and renamed into place as a whole, so readers and
concurrent writers only ever see complete records; two writers of the same content race harmlessly for the same id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch

from subnets.errors import SubnetsError
from subnets.io import check_writable_dir

from .files import discard, read_record_json, records_dir
from .mask_file import MASK_FILES
from .record import MaskRecord, validate_user_meta
from .update_log import UPDATE_LOGS, UpdateLog

ROOT_ENV = "SUBNETS_MASK_STORE"
DEFAULT_ROOT = "masks_store"
MIN_PREFIX = 4


class RecordFormat(Protocol):
    """How the records of one kind are read and checked (each format also has its own writer)."""

    def record(self, directory: Path, meta: dict[str, Any]) -> MaskRecord: ...

    def verify(self, directory: Path, meta: Mapping[str, Any]) -> str | None: ...


FORMATS: dict[str, RecordFormat] = {"ticket": MASK_FILES, "state": MASK_FILES, "update": UPDATE_LOGS}
"""Record kind -> its format; every kind of `subnets.masks.record.KINDS` has one."""


def record_format(directory: Path, meta: Mapping[str, Any]) -> RecordFormat:
    """The format of a record, by its kind; a kind this version does not know is a clear error."""
    kind = meta.get("kind")
    if kind not in FORMATS:
        raise SubnetsError(f"Record {directory.name[:12]} has kind {kind!r}; expected one of {', '.join(FORMATS)} "
                           f"(written by a newer version?).")
    return FORMATS[kind]


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
        self.records_dir = records_dir(self.root)

    # ---- writing -------------------------------------------------------------------------------------------
    def put(self, masks: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None) -> str:
        """Store a binary ticket (bool tensors) or a real-valued state (float tensors); returns the record id."""
        return MASK_FILES.write(self.root, masks, validate_user_meta(meta))

    def open_update_log(self, meta: Mapping[str, Any] | None = None, *, flush_every: int = 8) -> UpdateLog:
        """Start one update-mask record for a run (ROSE / RoAST); see `subnets.masks.update_log.UpdateLog`."""
        return UpdateLog.open(self.root, validate_user_meta(meta), flush_every=flush_every)

    def resume_update_log(self, state: Mapping[str, Any], *, flush_every: int = 8) -> UpdateLog:
        """Reopen the update log a run's checkpoint describes (`UpdateLog.state_dict()`); see `UpdateLog.resume`."""
        return UpdateLog.resume(self.root, state, flush_every=flush_every)

    def remove(self, record_id: str) -> str:
        """Delete a record (an abbreviated id is accepted); returns the full id."""
        full = self.resolve(record_id)
        discard(self.root, self.records_dir / full)
        return full

    # ---- reading -------------------------------------------------------------------------------------------
    def ids(self) -> list[str]:
        if not self.records_dir.is_dir():
            return []
        return sorted(p.name for p in self.records_dir.iterdir() if p.is_dir())

    def resolve(self, prefix: str) -> str:
        """The full id for an id or an unambiguous prefix of at least 4 hex digits, like git."""
        given, prefix = prefix, prefix.strip().lower()
        if len(prefix) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in prefix):
            if ("/" in given or os.sep in given or Path(given).suffix) and not Path(given).exists():
                raise SubnetsError(f"{given} does not exist (no such file or folder), and it is not a record id.")
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
        def check(directory: Path) -> str | None:
            meta = read_record_json(directory)
            return record_format(directory, meta).verify(directory, meta)

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
        return record_format(directory, meta).record(directory, meta)
