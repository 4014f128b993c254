"""Substitution candidates for one word: embedding neighbours, WordNet synonyms, TextBugger's bugs.

Every generator is called as `generator(word, rng) -> list[str]` with the word as it appears in the text; it
returns replacements in its preferred order (nearest first for embedding neighbours), never the word itself.
`rng` is a `random.Random` seeded per (attack seed, example, position), used only by TextBugger's random bugs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Protocol, Sequence

from .text import match_case
from .wordnet import WordNet


class CandidateGenerator(Protocol):
    def __call__(self, word: str, rng: random.Random) -> list[str]: ...

    def config(self) -> dict:
        """Its settings, as recorded in the attack's `attack_config["candidates"]`."""


class NeighbourSource(Protocol):
    source: str
    path: Path

    def neighbours(self, word: str, k: int) -> list[tuple[str, float | None]]: ...

    def cosine(self, a: str, b: str) -> float | None: ...


def _without(word: str, candidates: Sequence[str]) -> list[str]:
    """Case-matched candidates minus the word itself and duplicates, order kept."""
    out = dict.fromkeys(match_case(word, c) for c in candidates)
    out.pop(word, None)
    return list(out)


class EmbeddingSwap:
    """TextAttack's WordSwapEmbedding: the `max_candidates` nearest neighbours of the lower-cased word."""

    def __init__(self, source: NeighbourSource, max_candidates: int):
        self.source = source
        self.max_candidates = max_candidates

    def __call__(self, word: str, rng: random.Random) -> list[str]:
        return _without(word, [n for n, _ in self.source.neighbours(word.lower(), self.max_candidates)])

    def config(self) -> dict:
        return {"source": self.source.source, "path": str(self.source.path), "max_candidates": self.max_candidates}


class WordNetSynonyms:
    """PWWS's swap (WordSwapWordNet): single-word WordNet synonyms of the word in any part of speech."""

    def __init__(self, wordnet: WordNet):
        self.wordnet = wordnet

    def __call__(self, word: str, rng: random.Random) -> list[str]:
        return _without(word, list(self.wordnet.synonyms(word)))

    def config(self) -> dict:
        return {"source": "wordnet", "path": str(self.wordnet.directory)}


# WordSwapHomoglyphSwap's table (textattack/transformations/word_swaps/word_swap_homoglyph_swap.py).
HOMOGLYPHS = {
    "-": "˗", "9": "৭", "8": "Ȣ", "7": "𝟕", "6": "б", "5": "Ƽ", "4": "Ꮞ", "3": "Ʒ", "2": "ᒿ", "1": "l", "0": "O",
    "'": "`", "a": "ɑ", "b": "Ь", "c": "ϲ", "d": "ԁ", "e": "е", "f": "𝚏", "g": "ɡ", "h": "հ", "i": "і", "j": "ϳ",
    "k": "𝒌", "l": "ⅼ", "m": "ｍ", "n": "ո", "o": "о", "p": "р", "q": "ԛ", "r": "ⲅ", "s": "ѕ", "t": "𝚝", "u": "ս",
    "v": "ѵ", "w": "ԝ", "x": "×", "y": "у", "z": "ᴢ",
}


class CharacterBugs:
    """TextBuggerLi2018's four character bugs, as TextAttack configures them:

    * insert a space at one random inner position (WordSwapRandomCharacterInsertion, random_one, first and last
      character skipped);
    * delete one random inner character (WordSwapRandomCharacterDeletion, same options);
    * swap one random pair of neighbouring inner characters (WordSwapNeighboringCharacterSwap, same options);
    * every single-character homoglyph replacement (WordSwapHomoglyphSwap, all positions).
    """

    bugs = ("insert_space", "delete", "swap_neighbours", "homoglyph")

    def config(self) -> dict:
        return {"character_bugs": list(self.bugs)}

    def __call__(self, word: str, rng: random.Random) -> list[str]:
        out = []
        if len(word) > 2:  # an inner position exists: [1, len-1)
            i = rng.randrange(1, len(word) - 1)
            out.append(word[:i] + " " + word[i:])
            j = rng.randrange(1, len(word) - 1)
            out.append(word[:j] + word[j + 1:])
        if len(word) > 3:  # an inner pair exists: [1, len-2)
            s = rng.randrange(1, len(word) - 2)
            out.append(word[:s] + word[s + 1] + word[s] + word[s + 2:])
        out += [word[:i] + HOMOGLYPHS[ch] + word[i + 1:] for i, ch in enumerate(word) if ch in HOMOGLYPHS]
        return list(dict.fromkeys(c for c in out if c != word))


class Composite:
    """TextAttack's CompositeTransformation: the union of several generators' candidates, in order."""

    def __init__(self, generators: Sequence[CandidateGenerator]):
        self.generators = list(generators)

    def __call__(self, word: str, rng: random.Random) -> list[str]:
        return list(dict.fromkeys(c for g in self.generators for c in g(word, rng)))

    def config(self) -> dict:
        """The generators' settings merged, the last one's first (TextBugger's record: neighbours, then bugs)."""
        return {k: v for g in reversed(self.generators) for k, v in g.config().items()}
