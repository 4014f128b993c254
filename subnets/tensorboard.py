"""TensorBoard scalars: one `add_scalar` per tag, nothing written on non-main processes."""

from __future__ import annotations

import os
from typing import Mapping


class ScalarWriter:
    """Writes to `log_dir` (None: nowhere); the event file is created with the first scalar, so a run that
    stops on an input error leaves no empty log behind."""

    def __init__(self, log_dir: str | os.PathLike | None):
        self._log_dir = log_dir
        self._writer = None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self._log_dir))
        self._writer.add_scalar(tag, float(value), step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
