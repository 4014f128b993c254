"""The record format of tickets (binary masks) and states (real-valued gate or score states): the masks in one
`masks.safetensors` (binary entries bit-packed, `subnets.masks.bits`), written whole and read back against its
checksum."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from subnets.errors import SubnetsError
from subnets.sparsity import parse_pattern, pattern_violations, sparsity_report

from .bits import decode_masks, encode_masks
from .files import Staging, publish, read_checked, records_dir, utc_now, write_record_json
from .record import FORMAT_VERSION, MaskRecord, content_id, infer_kind, sha256_hex, tensor_layout

MASK_FILE = "masks.safetensors"


class MaskFileFormat:
    """Tickets and states (see `subnets.masks.store.FORMATS`)."""

    def write(self, root: Path, masks: Mapping[str, torch.Tensor], record: dict[str, Any]) -> str:
        """Store the masks with the (validated) user fields `record`; returns the record id."""
        if not masks:
            raise SubnetsError("Cannot store an empty mask dict; expected parameter name -> tensor entries.")
        data = encode_masks(masks)
        record["kind"] = infer_kind(masks, record.get("kind"))
        record["format"] = FORMAT_VERSION
        record["tensors"] = tensor_layout(masks)
        record["sparsity"] = sparsity_report(masks).as_record_field() if record["kind"] == "ticket" else None
        if record["kind"] == "ticket" and record.get("pattern") is not None:
            bad = pattern_violations(masks, parse_pattern(record["pattern"]))
            if bad:
                raise SubnetsError(f"The ticket declares pattern {record['pattern']}, which {bad[0]} does not hold "
                                   f"({len(bad)} tensor(s)); expected a mask with that pattern in every group.")
        record["files"] = {MASK_FILE: {"sha256": sha256_hex(data), "bytes": len(data)}}
        record["created"] = utc_now()
        record_id = content_id(record, {MASK_FILE: record["files"][MASK_FILE]["sha256"]})
        if (records_dir(root) / record_id).is_dir():
            return record_id
        with Staging(root) as tmp:
            (tmp / MASK_FILE).write_bytes(data)
            write_record_json(tmp, record)
            publish(root, tmp, record_id)
        return record_id

    def record(self, directory: Path, meta: dict[str, Any]) -> MaskRecord:
        """The record; its masks are read (and checked) on first access."""
        return MaskRecord(directory.name, meta, lambda: decode_masks(read_checked(directory / MASK_FILE, meta["files"][MASK_FILE])))

    def verify(self, directory: Path, meta: Mapping[str, Any]) -> str | None:
        """The problem with the record, or None."""
        decode_masks(read_checked(directory / MASK_FILE, meta["files"][MASK_FILE]))
        expected = content_id(meta, {MASK_FILE: meta["files"][MASK_FILE]["sha256"]})
        return None if expected == directory.name else "the id does not match the record's content"


MASK_FILES = MaskFileFormat()
