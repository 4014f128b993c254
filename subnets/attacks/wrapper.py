"""The attacks' view of a model: `predict_proba(list of text tuples) -> probabilities`, batched efficiently.

`HFClassifier` wraps a `transformers` sequence classifier and its tokenizer: it tokenises a whole query list at
once (fast tokenizer, truncation at `max_length`), runs under `torch.inference_mode` (bf16 autocast on CUDA) and
copies the probabilities to the host once per call. It keeps counters the benchmark reads (queries, seconds
preparing inputs and seconds in model forwards).

A text's probabilities depend on the text alone, never on the other texts of the call: matrix kernels round
differently for different batch shapes (a text scored beside others of another length, or in a batch of another
size, changes in its last bits), so every forward has a canonical shape. A text is padded to its length rounded up
to a multiple of `PAD_MULTIPLE` tokens (at most `max_length`), texts of one padded length are batched together, and
every batch has exactly `batch_size` rows (a short batch repeats its first row; default `DEFAULT_ROWS`). Attacks
therefore give the same result for an example whichever examples share its model calls (`runner.run_attack`'s
`batch_size`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:  # imported where used: parsing a command's options loads no model classes
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

import numpy as np
import torch

from ..distributed import pick_device
from ..errors import SubnetsError
from ..precision import autocast

PAD_MULTIPLE = 8  # texts are padded to a multiple of 8 tokens (tensor-core friendly, little padding)
# Rows per forward by device: a GPU runs 64 rows about as fast as 8; on a CPU a filler row costs as much as a
# real one, and 4 rows cost no more per row than 64 (docs/performance.md).
DEFAULT_ROWS = {"cuda": 64, "cpu": 4}


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

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, batch_size: int | None = None,
                 max_length: int = 128, device: str | torch.device | None = None, bf16: bool = True):
        self.device = torch.device(device) if device is not None else pick_device()
        batch_size = batch_size or DEFAULT_ROWS.get(self.device.type, DEFAULT_ROWS["cpu"])
        if batch_size < 1 or max_length < 2:
            raise SubnetsError(f"batch_size must be >= 1 and max_length >= 2; got {batch_size} and {max_length}.")
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
    def _padded(sequences: list[list[int]], pad: int, length: int, rows: int) -> torch.Tensor:
        """`sequences` padded to `length`, with the first one repeated until there are `rows`."""
        sequences = sequences + [sequences[0]] * (rows - len(sequences))
        return torch.tensor([s + [pad] * (length - len(s)) for s in sequences], dtype=torch.long)

    def _batches(self, inputs: Sequence[tuple[str, ...]]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """(row indices, model inputs of the canonical shape) per batch; see the module docstring."""
        encoded = self._tokenize(inputs)
        ids = encoded["input_ids"]
        type_ids = encoded.get("token_type_ids")
        padded_length = [min(-(-len(s) // PAD_MULTIPLE) * PAD_MULTIPLE, self.max_length) for s in ids]
        groups: dict[int, list[int]] = {}
        for i in sorted(range(len(ids)), key=lambda i: padded_length[i]):
            groups.setdefault(padded_length[i], []).append(i)
        pad = self.tokenizer.pad_token_id or 0
        batches = []
        for length, members in groups.items():
            for begin in range(0, len(members), self.batch_size):
                rows = members[begin:begin + self.batch_size]
                input_ids = self._padded([ids[i] for i in rows], pad, length, self.batch_size)
                lengths = self._padded([[len(ids[i])] for i in rows], 0, 1, self.batch_size)
                batch = {"input_ids": input_ids, "attention_mask": (torch.arange(length)[None, :] < lengths).long()}
                if type_ids is not None:
                    batch["token_type_ids"] = self._padded([type_ids[i] for i in rows], 0, length, self.batch_size)
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
                logits = self.model(**batch).logits[:len(rows)]
                probs[rows.to(self.device, non_blocking=True)] = logits.float().softmax(-1)
        result = probs.cpu().numpy()
        self.stats.queries += len(inputs)
        self.stats.calls += 1
        self.stats.tokenize_seconds += prepared - start
        self.stats.model_seconds += time.perf_counter() - prepared
        return result
