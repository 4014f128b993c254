"""The attacks' view of a model: `predict_proba(list of text tuples) -> probabilities`, batched efficiently.

`HFClassifier` wraps a `transformers` sequence classifier and its tokenizer: it tokenises a whole query list at
once (fast tokenizer, truncation at `max_length`), sorts it by length so each batch pads little, pads each batch
only to its own longest input, runs under `torch.inference_mode` (bf16 autocast on CUDA) and copies the
probabilities to the host once per call. It keeps counters the benchmark reads (queries, seconds preparing
inputs and seconds in model forwards).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..distributed import pick_device
from ..errors import SubnetsError
from ..precision import autocast


class Classifier(Protocol):
    def predict_proba(self, inputs: Sequence[tuple[str, ...]]) -> np.ndarray: ...


@dataclass
class QueryStats:
    queries: int = 0
    calls: int = 0
    tokenize_seconds: float = 0.0
    model_seconds: float = 0.0


class HFClassifier:
    """Batched black-box access to a sequence classifier (single sentences or sentence pairs)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 64,
                 max_length: int = 128, device: str | torch.device | None = None, bf16: bool = True):
        if batch_size < 1 or max_length < 2:
            raise SubnetsError(f"batch_size must be >= 1 and max_length >= 2; got {batch_size} and {max_length}.")
        self.device = torch.device(device) if device is not None else pick_device()
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.bf16 = bf16
        self.num_labels = model.config.num_labels
        self.stats = QueryStats()

    @property
    def unk_token(self) -> str:
        return self.tokenizer.unk_token or "[UNK]"

    def _tokenize(self, inputs: Sequence[tuple[str, ...]]) -> dict[str, list[list[int]]]:
        width = len(inputs[0])
        if width not in (1, 2) or any(len(x) != width for x in inputs):
            raise SubnetsError(f"Classifier inputs must all be 1-tuples or all 2-tuples of text; got widths "
                               f"{sorted({len(x) for x in inputs})}.")
        columns = [list(c) for c in zip(*inputs)]
        return self.tokenizer(*columns, truncation=True, max_length=self.max_length, return_attention_mask=False)

    @staticmethod
    def _padded(sequences: list[list[int]], pad: int) -> torch.Tensor:
        length = max(len(s) for s in sequences)
        return torch.tensor([s + [pad] * (length - len(s)) for s in sequences], dtype=torch.long)

    def _batches(self, inputs: Sequence[tuple[str, ...]]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(row indices, padded model inputs) per batch, inputs sorted by token length."""
        encoded = self._tokenize(inputs)
        ids = encoded["input_ids"]
        type_ids = encoded.get("token_type_ids")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad = self.tokenizer.pad_token_id or 0
        batches = []
        for begin in range(0, len(order), self.batch_size):
            rows = order[begin:begin + self.batch_size]
            input_ids = self._padded([ids[i] for i in rows], pad)
            lengths = torch.tensor([len(ids[i]) for i in rows])
            batch = {"input_ids": input_ids,
                     "attention_mask": (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()}
            if type_ids is not None:
                batch["token_type_ids"] = self._padded([type_ids[i] for i in rows], 0)
            batches.append((torch.tensor(rows), batch))
        return batches

    def predict_proba(self, inputs: Sequence[tuple[str, ...]]) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        start = time.perf_counter()
        batches = self._batches(inputs)
        prepared = time.perf_counter()
        probs = torch.empty((len(inputs), self.num_labels), dtype=torch.float32, device=self.device)
        with torch.inference_mode(), autocast(self.device, self.bf16):
            for rows, batch in batches:
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                logits = self.model(**batch).logits
                probs[rows.to(self.device, non_blocking=True)] = logits.float().softmax(-1)
        result = probs.cpu().numpy()
        self.stats.queries += len(inputs)
        self.stats.calls += 1
        self.stats.tokenize_seconds += prepared - start
        self.stats.model_seconds += time.perf_counter() - prepared
        return result
