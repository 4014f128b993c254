"""`--mask_store`: the one mask store a stage writes every record to (tickets, states and update masks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from subnets.masks.store import check_store_root, store_root


@dataclass
class MaskStoreArguments:
    _argument_group_name = "store"  # its --help section
    mask_store: str | None = field(default=None, metadata={
        "help": "Mask store root for every record the stage reads or writes: searched tickets and states, retrained "
                "tickets and update masks (default: $SUBNETS_MASK_STORE, else ./masks_store)."})

    def __post_init__(self) -> None:
        """Refuse a root that cannot be a writable folder while parsing, before a stage creates its run directory."""
        check_store_root(self.root)

    @property
    def root(self) -> Path:
        return store_root(self.mask_store)
