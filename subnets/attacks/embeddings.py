"""Embedding neighbours for word swaps: from a counter-fitted vectors file, or from the shipped neighbour lists.

`VectorNeighbours` reads the counter-fitted vectors text format (`counter-fitted-vectors.txt`, Mrksic et al. 2016:
one word and its 300 floats per line), finds every word's `NEIGHBOURS_CACHED` nearest words by cosine similarity
(the word itself excluded) and caches that table next to the file (`<file>.neighbours-<k>.npz`, plain arrays read
without pickle; rebuilt when the file's size or modification time changes). TextFooler's rule -- the 50 nearest,
kept when cosine >= 0.5 -- is the `k` of the swap plus the cosine constraint (constraints.EmbeddingCosine).

`ListedNeighbours` is the offline fallback: `<data_dir>/attack/counterfitted_neighbors.json` ({word: [neighbour,
...]}, nearest first), Alzantot et al.'s at most 8 neighbours within Euclidean distance 0.5 of the unit-norm
counter-fitted vectors, i.e. cosine >= 0.875 (so the 0.5 floor holds for every listed pair; no cosines are stored).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import SubnetsError
from ..io import atomic_write_bytes

NEIGHBOURS_FILE = Path("attack") / "counterfitted_neighbors.json"
NEIGHBOURS_CACHED = 50  # TextFoolerJin2019: WordSwapEmbedding(max_candidates=50), the largest k of any recipe
LISTED_MIN_COSINE = 0.875  # 1 - 0.5**2 / 2: Alzantot et al.'s distance 0.5 on unit vectors


def read_vectors(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Words and their float32 vectors from a `word f1 f2 ...` text file (every line the same dimension)."""
    words, rows = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").split(" ")
            if len(parts) < 2:
                continue
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError as e:
                raise SubnetsError(f"{path} line {number} is not `word float float ...` ({e}); expected the "
                                   f"counter-fitted vectors text format.") from e
            if len(rows[-1]) != len(rows[0]):
                raise SubnetsError(f"{path} line {number} has {len(rows[-1])} numbers where line 1 has "
                                   f"{len(rows[0])}; expected one dimension for every word.")
            words.append(parts[0])
    if len(words) < 2:
        raise SubnetsError(f"{path} holds {len(words)} word vectors; expected a counter-fitted vectors file.")
    return words, np.stack(rows)


def nearest_neighbours(vectors: np.ndarray, k: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For every row, the ids and cosines of its `k` most cosine-similar other rows, most similar first."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    k = min(k, len(unit) - 1)
    ids = np.empty((len(unit), k), dtype=np.int32)
    cosines = np.empty((len(unit), k), dtype=np.float32)
    for begin in range(0, len(unit), chunk):
        sims = unit[begin:begin + chunk] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, begin + rows] = -np.inf  # never a word's own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        ids[begin:begin + chunk] = np.take_along_axis(top, order, axis=1)
        cosines[begin:begin + chunk] = np.take_along_axis(top_sims, order, axis=1)
    return ids, cosines


class VectorNeighbours:
    """Nearest neighbours by cosine in a counter-fitted vectors file, with the table cached next to it."""

    source = "vectors"

    def __init__(self, path: str | os.PathLike, k: int = NEIGHBOURS_CACHED):
        self.path = Path(path)
        if not self.path.is_file():
            raise SubnetsError(f"--attack_embeddings {self.path} is not a file; expected the counter-fitted "
                               f"vectors text file (one word and its floats per line).")
        stat = self.path.stat()
        self.cache_path = self.path.with_name(f"{self.path.name}.neighbours-{k}.npz")
        stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
        table = self._load_cache(stamp)
        if table is None:
            words, vectors = read_vectors(self.path)
            ids, cosines = nearest_neighbours(vectors, k)
            table = {"words": np.array(words), "ids": ids, "cosines": cosines, "stamp": stamp}
            self._write_cache(table)
        self.words = [str(w) for w in table["words"]]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.ids, self.cosines = table["ids"], table["cosines"]

    def _load_cache(self, stamp: np.ndarray) -> dict[str, np.ndarray] | None:
        if not self.cache_path.is_file():
            return None
        with np.load(self.cache_path, allow_pickle=False) as data:
            table = {key: data[key] for key in data.files}
        return table if np.array_equal(table.get("stamp"), stamp) else None

    def _write_cache(self, table: dict[str, np.ndarray]) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **table)
        atomic_write_bytes(self.cache_path, buffer.getvalue())

    def neighbours(self, word: str, k: int) -> list[tuple[str, float | None]]:
        i = self.index.get(word)
        if i is None:
            return []
        return [(self.words[j], float(c)) for j, c in zip(self.ids[i, :k], self.cosines[i, :k])]

    def cosine(self, a: str, b: str) -> float | None:
        """Cosine of two words if b is among a's cached neighbours; None when unknown."""
        i = self.index.get(a)
        if i is None or b not in self.index:
            return None
        hits = np.flatnonzero(self.ids[i] == self.index[b])
        return float(self.cosines[i, hits[0]]) if len(hits) else None


class ListedNeighbours:
    """The shipped neighbour lists (`<data_dir>/attack/counterfitted_neighbors.json`), nearest first."""

    source = "shipped_lists"

    def __init__(self, data_dir: str | os.PathLike):
        path = Path(data_dir) / NEIGHBOURS_FILE
        if not path.is_file():
            raise SubnetsError(f"Counter-fitted neighbour file {path} is missing; expected --data_dir to be the data "
                               f"folder holding {NEIGHBOURS_FILE} (see its MANIFEST.md), or --attack_embeddings.")
        try:
            table = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SubnetsError(f"{path} is not valid JSON ({e.msg}); expected an object {{word: [neighbour, ...]}}.") from e
        if not isinstance(table, dict):
            raise SubnetsError(f"{path} holds a {type(table).__name__}; expected an object {{word: [neighbour, ...]}}.")
        self.path = path
        self.table: dict[str, list[str]] = table

    def neighbours(self, word: str, k: int) -> list[tuple[str, float | None]]:
        return [(n, None) for n in self.table.get(word, [])[:k]]

    def cosine(self, a: str, b: str) -> float | None:
        return LISTED_MIN_COSINE if b in self.table.get(a, []) else None
