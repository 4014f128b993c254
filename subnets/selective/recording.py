"""Where selective fine-tuning's update masks go: the mask store (sampled steps) and TensorBoard (per layer).

The reference ROSE code dumped the full gradient to disk every 5 steps; here only the masks are kept: one
0-d value per tensor (or the element-wise mask) every N steps, in an update-mask record of the mask store,
whose per-tensor update counts the store maintains. The record is opened with the first logged step; every
checkpoint flushes it and keeps its position, and a resumed run continues the same record, so the record a
killed and resumed run closes equals an uninterrupted run's. The record id is written to
`<output_dir>/update_masks.json` when training ends, before the record is renamed to it: a rerun of the finished
run (or one killed after training ended) finds the closed record there and finishes without logging more.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from subnets.masks import MaskStore, UpdateLog, describe_model
from subnets.errors import SubnetsError
from subnets.io import atomic_write_json
from subnets.sparsity import update_ratio_scalars

from .parameters import LayerParameter, UpdateRatioMeter

RESULT_FILE = "update_masks.json"


class UpdateMaskRecorder:
    """Per-run writer of update masks into the store at `store_root` (main process only), plus the per-layer
    update-ratio meter."""

    def __init__(self, method: str, store_root: str | os.PathLike, every: int):
        if every < 1:
            raise SubnetsError(f"update_mask_every must be at least 1; got {every}.")
        self.method, self.every = method, every
        self.selected: list[LayerParameter] = []
        self.log: UpdateLog | None = None
        self.meta: dict[str, Any] | None = None  # the record's metadata (main process), taken before training
        self.meter: UpdateRatioMeter | None = None
        self.store_path = Path(store_root)
        self.result_path: Path | None = None  # <output_dir>/update_masks.json
        self.closed_id: str | None = None  # the record a resumed run's log was already closed into

    def start(self, trainer: Any, selected: list[LayerParameter]) -> None:
        self.selected = list(selected)
        self.meter = UpdateRatioMeter(self.selected, trainer.device)
        self.result_path = Path(trainer.output_dir) / RESULT_FILE
        if trainer.is_main_process:
            self.meta = {"method": self.method, "task": trainer.task.name, "seed": trainer.args.seed,
                         "logged_every": self.every, **describe_model(trainer.model)}

    def observe(self, trainer: Any, masks: list[torch.Tensor], *, force: bool = False) -> None:
        """Count the masks of this step for the ratios; every N steps (or if `force`) log them to the store."""
        self.meter.add(masks)
        if self.meta is not None and (force or trainer.global_step % self.every == 0):
            if self.log is None:
                self.log = MaskStore(self.store_path).open_update_log(dict(self.meta))
            # 0-d masks are kept as values (ROSE-Ensemble's gamma), copied because they may share storage;
            # element-wise ones as bits (updated or not)
            stored = [m.clone() if m.dim() == 0 else m != 0 for m in masks]
            self.log.append(trainer.global_step, {s.name: m for s, m in zip(self.selected, stored)})

    def ratio_scalars(self) -> dict[str, float]:
        """`update/ratio/layer_<i>`: the mean over the steps observed since the last call ({} if none were)."""
        return update_ratio_scalars(self.meter.mean() if self.meter is not None else [])

    def state_dict(self) -> dict[str, Any]:
        """The open record's position (flushed to the store first), for the run's checkpoint."""
        return {"update_log": self.log.state_dict()} if self.log is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the record a checkpoint was logging to (main process); if training had ended and the record
        was closed, keep its id."""
        logged = state.get("update_log")
        if self.meta is None or not logged:
            return
        store = MaskStore(self.store_path)
        closed = self._closed_as(logged["id"]) if not (store.records_dir / logged["id"]).is_dir() else None
        if closed is not None:
            self.closed_id = closed
        else:
            self.log = store.resume_update_log(logged)

    def _closed_as(self, provisional: str) -> str | None:
        """The id of the record the log opened as `provisional` was closed into, if this run's update_masks.json
        names it and the store holds it."""
        try:
            result = json.loads(self.result_path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        closed = result.get("update_log_id") if result.get("opened_as") == provisional else None
        return closed if closed and (MaskStore(self.store_path).records_dir / closed).is_dir() else None

    def finish(self, trainer: Any) -> str | None:
        if self.log is None:
            return self.closed_id
        opened_as = self.log.id

        def announce(record_id: str) -> None:
            atomic_write_json(self.result_path, {"update_log_id": record_id, "opened_as": opened_as,
                                                 "mask_store": str(self.store_path), "method": self.method})

        return self.log.close(announce)
