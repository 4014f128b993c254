"""TensorBoard scalars: the Trainer's default metric logger (one `add_scalar` per tag)."""

from __future__ import annotations

import os
from typing import Mapping


class TensorBoardLogger:
    """Writes to `log_dir` (None: nowhere); the event file is created with the first scalar, so a run that
    stops on an input error leaves no empty log behind."""

    def __init__(self, log_dir: str | os.PathLike | None):
        self._log_dir = log_dir
        self._writer = None

    def log_dict(self, scalars: Mapping[str, float], step: int) -> None:
        if self._log_dir is None or not scalars:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self._log_dir))
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
