"""The files of a record directory, shared by every record format: the checksummed `record.json`, data files
read against their recorded checksums, and staging + publishing (a record appears in `<root>/records/` whole,
by one rename of a directory assembled in `<root>/tmp/`)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from subnets.errors import SubnetsError
from subnets.io import atomic_write_bytes, make_temp_dir

from .record import canonical_json, sha256_hex

RECORD_FILE = "record.json"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def records_dir(root: Path) -> Path:
    """Where the published records of the store at `root` live."""
    return root / "records"


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


def publish(root: Path, staged: Path, record_id: str) -> bool:
    """Rename a staged record directory into place; False if a record with this id already exists."""
    records_dir(root).mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, records_dir(root) / record_id)
        return True
    except OSError:
        if (records_dir(root) / record_id).is_dir():  # the same content was published concurrently
            return False
        raise


def discard(root: Path, directory: Path) -> None:
    """Remove a record directory: it disappears at once for readers (one rename), then is cleaned up."""
    trash = root / "tmp" / f"rm-{directory.name}-{os.getpid()}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


class Staging:
    """A fresh directory under `<root>/tmp/`, removed on exit unless it was published (renamed away)."""

    def __init__(self, root: Path):
        self.parent = root / "tmp"

    def __enter__(self) -> Path:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.path = make_temp_dir(self.parent, prefix="stage-")
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
