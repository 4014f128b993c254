"""The attack recipes: each one a function that composes its candidate source, constraints and search ranking.

A recipe is written as TextAttack writes one (`textattack/attack_recipes/*.py`: a `build` that puts together a
transformation, constraints, a goal function and a search method): the function below names its components, its
constants sit beside it with the file and paper they come from, and `RECIPES` registers it in one line. Every
component reports its own settings (`config()`); `attack.config`, recorded as metrics.json's `attack_config` and
compared on resume, is assembled from those reports (`Kit.compose`). The goal is always TextAttack's untargeted
classification and the search its greedy word swap with word-importance ranking (`search.GreedyWordSwapWIR`).

The options (`AttackOptions`) are parsed once by `pipelines/evaluate.py`, or built from keywords by
`subnets.api.attack` and `build_attack`, and reach the recipe unchanged. Their defaults are the recipe's: no query
budget, no perturbed-word cap, the recipe's number of neighbours, the shipped neighbour lists unless
`--attack_embeddings` is given.

| recipe     | swap                           | constraints, in order                              | ranking           |
|------------|--------------------------------|----------------------------------------------------|-------------------|
| textfooler | 50 counter-fitted neighbours   | repeat, TextFooler stopwords, cos >= 0.5, POS, USE | delete            |
| pwws       | WordNet synonyms               | repeat, NLTK stopwords                             | weighted-saliency |
| textbugger | 4 character bugs, 5 neighbours | repeat, NLTK stopwords, USE (whole text)           | delete            |
| bae        | 50 neighbours (Robust Tickets) | repeat, NLTK stopwords, POS, USE (cosine 0.2)      | delete            |
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..config import check_at_least_one
from ..errors import SubnetsError
from ..registry import check_choice
from .candidates import CandidateGenerator, CharacterBugs, Composite, EmbeddingSwap, WordNetSynonyms
from .constraints import (CONSTRAINT_NAMES, EmbeddingCosine, MaxWordsPerturbed, PartOfSpeech, RepeatModification,
                          SentenceSimilarity, SpacyTagger, StopwordModification, UniversalSentenceEncoder)
from .embeddings import ListedNeighbours, VectorNeighbours
from .search import GreedyWordSwapWIR, Ranking
from .stopwords import NLTK_STOP_WORDS, TEXTFOOLER_STOP_WORDS
from .wordnet import WordNet
from .wrapper import Classifier

UNK_TOKEN = "[UNK]"  # GreedyWordSwapWIR(unk_token="[UNK]"): the literal string, whatever the model's tokenizer
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


Constraints = Mapping[str, Callable[[], Any]]  # constraint name (as --attack_disable names it) -> its builder


@dataclass
class Kit:
    """What a recipe is composed from: the classifier, the options, the data folder, the neighbour count."""

    recipe: str
    classifier: Classifier
    options: AttackOptions
    data_dir: str | None
    max_candidates: int | None  # neighbours per word: --attack_max_candidates, else the recipe's published number

    def neighbours(self) -> ListedNeighbours | VectorNeighbours:
        """The counter-fitted neighbours: --attack_embeddings' vectors, else the data folder's shipped lists."""
        embeddings = self.options.attack_embeddings
        return _neighbour_source(self.data_dir, str(embeddings) if embeddings else None)

    def compose(self, *, source: str, candidates: CandidateGenerator, constraints: Constraints,
                ranking: Ranking) -> GreedyWordSwapWIR:
        """The attack of these components; the constraints `--attack_disable` names are never built (so their
        models are not loaded), `--attack_max_ratio` appends MaxWordsPerturbed."""
        built = [make() for name, make in constraints.items() if name not in self.options.disabled]
        if self.options.attack_max_ratio is not None:
            built.append(MaxWordsPerturbed(self.options.attack_max_ratio))
        attack = GreedyWordSwapWIR(
            self.classifier, candidates, ranking=ranking, unk_token=UNK_TOKEN,
            pre_constraints=[c for c in built if hasattr(c, "modifiable")],
            constraints=[c for c in built if not hasattr(c, "modifiable")],
            query_budget=self.options.attack_budget, seed=self.options.attack_seed)
        attack.config = {"recipe": self.recipe, "source": source, **attack.settings()}
        return attack


def textfooler(kit: Kit) -> GreedyWordSwapWIR:
    """TextFoolerJin2019 (Jin et al. 2020, "Is BERT Really Robust?"): the 50 nearest counter-fitted neighbours with
    cosine >= 0.5, part of speech kept, USE similarity of a 15-word window; words ranked by deletion. Ours differs
    in its USE (multilingual v3), POS tagger (spaCy) and, without --attack_embeddings, its neighbour lists
    (docs/robustness.md, deviations)."""
    neighbours = kit.neighbours()
    return kit.compose(
        source="textattack/attack_recipes/textfooler_jin_2019.py (TextFoolerJin2019)",
        candidates=EmbeddingSwap(neighbours, kit.max_candidates),
        constraints={
            "repeat": RepeatModification,
            "stopwords": lambda: StopwordModification(TEXTFOOLER_STOP_WORDS, "textfooler"),
            "embedding": lambda: EmbeddingCosine(neighbours, TEXTFOOLER_MIN_COS),
            "pos": lambda: PartOfSpeech(shared_tagger()),
            "use": lambda: SentenceSimilarity(shared_encoder(), threshold=TEXTFOOLER_USE_THRESHOLD, metric="angular",
                                              window=15, skip_short=True, compare_against_original=False),
        },
        ranking="delete")


TEXTFOOLER_NEIGHBOURS = 50  # WordSwapEmbedding(max_candidates=50)
TEXTFOOLER_MIN_COS = 0.5  # WordEmbeddingDistance(min_cos_sim=0.5): the released code's (the paper says 0.7)
# 1 - 0.5 / pi: TextFooler's code forgot to divide the angle by pi (recipe comment; the value before TextAttack
# commit 8d5e8e7b of July 2020 was 1 - 0.3 / pi = 0.904458599).
TEXTFOOLER_USE_THRESHOLD = 0.840845057


def pwws(kit: Kit) -> GreedyWordSwapWIR:
    """PWWSRen2019 (Ren et al. 2019, "Generating Natural Language Adversarial Examples through Probability Weighted
    Word Saliency"): WordNet synonyms, words ranked by weighted saliency (Eq. 7-8), no similarity constraint. Ours
    reads WordNet 3.0's dict files itself (wordnet.py) and keeps its sense order."""
    return kit.compose(
        source="textattack/attack_recipes/pwws_ren_2019.py (PWWSRen2019)",
        candidates=WordNetSynonyms(WordNet(kit.options.wordnet_dir)),
        constraints={"repeat": RepeatModification, "stopwords": lambda: StopwordModification(NLTK_STOP_WORDS, "nltk")},
        ranking="weighted-saliency")


def textbugger(kit: Kit) -> GreedyWordSwapWIR:
    """TextBuggerLi2018 (Li et al. 2019, "TextBugger"): four character bugs and the 5 nearest neighbours, USE
    similarity of the whole text against the original (UniversalSentenceEncoder(threshold=0.8): the class
    defaults, angular metric). Ours differs in its USE and its random bug positions (seeded per example and
    position; docs/robustness.md, deviations)."""
    return kit.compose(
        source="textattack/attack_recipes/textbugger_li_2018.py (TextBuggerLi2018)",
        candidates=Composite([CharacterBugs(), EmbeddingSwap(kit.neighbours(), kit.max_candidates)]),
        constraints={
            "repeat": RepeatModification,
            "stopwords": lambda: StopwordModification(NLTK_STOP_WORDS, "nltk"),
            "use": lambda: SentenceSimilarity(shared_encoder(), threshold=0.8, metric="angular", window=None,
                                              skip_short=False, compare_against_original=True),
        },
        ranking="delete")


TEXTBUGGER_NEIGHBOURS = 5  # WordSwapEmbedding(max_candidates=5)


def bae(kit: Kit) -> GreedyWordSwapWIR:
    """The "BERT-Attack" column of Robust Tickets (Zheng et al. 2022), run by their `build_weak_attacker`: BAE's
    search and POS constraint (Garg & Ramakrishnan 2020) with the 50 nearest counter-fitted neighbours in place of
    the masked-LM swap, and their own USE constraint (cosine >= 0.2, 15-word window, no skipping) in place of BAE's
    (angular >= 0.936338023)."""
    return kit.compose(
        source="ruizheng20/robust_ticket attack_ticket_more_attackers.py build_weak_attacker('bertattack'): "
               "BAEGarg2019 with WordSwapEmbedding(max_candidates=--neighbour_vocab_size 50) in place of the "
               "masked-LM swap, BAE's USE removed and UniversalSentenceEncoder(threshold=--sentence_similarity "
               "0.2, metric='cosine', compare_against_original=True, window_size=15, "
               "skip_text_shorter_than_window=False) appended (attack_ticket.sh)",
        candidates=EmbeddingSwap(kit.neighbours(), kit.max_candidates),
        constraints={
            "repeat": RepeatModification,
            "stopwords": lambda: StopwordModification(NLTK_STOP_WORDS, "nltk"),
            "pos": lambda: PartOfSpeech(shared_tagger()),
            "use": lambda: SentenceSimilarity(shared_encoder(), threshold=0.2, metric="cosine", window=15,
                                              skip_short=False, compare_against_original=True),
        },
        ranking="delete")


BAE_NEIGHBOURS = 50  # attack_ticket.sh --neighbour_vocab_size 50


@dataclass(frozen=True)
class Recipe:
    build: Callable[[Kit], GreedyWordSwapWIR]
    max_candidates: int | None = None  # the published neighbours per word (pipelines/reproduce.py reports it)


RECIPES: dict[str, Recipe] = {
    "textfooler": Recipe(textfooler, TEXTFOOLER_NEIGHBOURS),
    "pwws": Recipe(pwws),
    "textbugger": Recipe(textbugger, TEXTBUGGER_NEIGHBOURS),
    "bae": Recipe(bae, BAE_NEIGHBOURS),
}
ATTACKS = tuple(RECIPES)
KEYWORD_PREFIX = "attack_"


@dataclass
class AttackOptions:
    """The attack options: the fields are evaluate.py's command-line options; `from_keywords` builds them from the
    keywords of `subnets.api.attack` and `build_attack`, each a field's name without the `attack_` prefix
    (`samples` for `--attack_samples`) unless `_keywords` names another (`query_budget` for `--attack_budget`)."""

    _argument_group_name = "attacks"  # its --help section
    _keywords = {"attack_budget": "query_budget"}
    attack: str = field(default="none", metadata={"help": "none|textfooler|pwws|textbugger|bae (docs/robustness.md)."})
    attack_samples: int | None = field(default=None, metadata={
        "help": "Examples to attack (default: 872 SST-2, else 1000; a file: all rows)."})
    attack_seed: int = 0
    attack_budget: int | None = field(default=None, metadata={
        "help": "Query budget per example (default: the recipe's, none)."})
    attack_max_ratio: float | None = field(default=None, metadata={
        "help": "Largest share of words an attack may change (default: the recipe's, no cap)."})
    attack_max_candidates: int | None = field(default=None, metadata={
        "help": "Embedding neighbours per word (default: the recipe's, 50 or 5)."})
    attack_embeddings: str | None = field(default=None, metadata={
        "help": "Counter-fitted vectors text file (default: the shipped neighbour lists)."})
    attack_disable: str = field(default="", metadata={
        "help": "Comma-separated constraints to switch off: repeat,stopwords,embedding,pos,use."})
    attack_batch_size: int | None = field(default=None, metadata={
        "help": "Examples attacked together, their candidates scored in shared model batches (results as one at a "
                "time; default: 64 on CUDA, 32 on CPU)."})
    wordnet_dir: str | None = field(default=None, metadata={
        "help": "WordNet dict folder (default /usr/share/wordnet)."})

    def __post_init__(self) -> None:
        """Reject bad values while parsing, before anything is written."""
        check_choice("attack", self.attack, ("none", *ATTACKS))
        if self.attack_batch_size is not None:
            if self.attack == "none":
                raise SubnetsError("--attack_batch_size was given without --attack; expected one of "
                                   + ", ".join(ATTACKS) + ".")
            check_at_least_one(self, ("attack_batch_size",))
        if self.attack_samples is not None and self.attack_samples < 1:  # 0 would not mean "the default size"
            raise SubnetsError(f"The number of examples to attack (--attack_samples) must be at least 1; got "
                               f"{self.attack_samples} (leave it out for the default size).")
        unknown = sorted(set(self.disabled) - set(CONSTRAINT_NAMES))
        if unknown:
            raise SubnetsError(f"Unknown constraint(s) {', '.join(unknown)} to disable; expected some of "
                               f"{', '.join(CONSTRAINT_NAMES)}.")
        if self.attack_max_candidates is not None and self.attack_max_candidates < 1:
            raise SubnetsError(f"max_candidates must be a positive number of neighbours; got "
                               f"{self.attack_max_candidates}.")
        if self.attack_max_candidates is not None and self.attack in RECIPES and \
                RECIPES[self.attack].max_candidates is None:
            raise SubnetsError(f"--attack_max_candidates has no effect on {self.attack}, which draws WordNet "
                               f"synonyms; expected it only with an embedding-neighbour attack "
                               f"({', '.join(n for n, r in RECIPES.items() if r.max_candidates is not None)}).")

    @property
    def disabled(self) -> tuple[str, ...]:
        """The constraints --attack_disable switches off."""
        return tuple(c for c in self.attack_disable.split(",") if c)

    @classmethod
    def from_keywords(cls, **options: Any) -> AttackOptions:
        """The options from keywords (`disable` may also be a sequence of names); one error for an unknown name."""
        names = {cls._keywords.get(f.name, f.name.removeprefix(KEYWORD_PREFIX)): f.name
                 for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise SubnetsError(f"Unknown attack option(s) {', '.join(unknown)}; expected some of {', '.join(names)}.")
        if not isinstance(options.get("disable", ""), str):
            options["disable"] = ",".join(options["disable"])
        return cls(**{names[k]: v for k, v in options.items()})


def recipe_of(name: str) -> Recipe:
    if name not in RECIPES:
        raise SubnetsError(f"Unknown attack '{name}'; expected one of {', '.join(ATTACKS)} (or none).")
    return RECIPES[name]


def attack_for(options: AttackOptions, classifier: Classifier, *,
               data_dir: str | os.PathLike | None = None) -> GreedyWordSwapWIR:
    """The attack `options.attack` names, composed by its recipe; `attack.config` is what its components report."""
    recipe = recipe_of(options.attack)
    kit = Kit(options.attack, classifier, options, None if data_dir is None else str(data_dir),
              options.attack_max_candidates or recipe.max_candidates)
    return recipe.build(kit)


def build_attack(name: str, classifier: Classifier, *, data_dir: str | os.PathLike | None = None,
                 **options: Any) -> GreedyWordSwapWIR:
    """`attack_for` with the options as keywords (embeddings, wordnet_dir, query_budget, max_ratio, max_candidates,
    disable, seed: see `AttackOptions.from_keywords`)."""
    recipe_of(name)
    return attack_for(AttackOptions.from_keywords(attack=name, **options), classifier, data_dir=data_dir)


def paper_sample_size(task_name: str) -> int:
    return PAPER_SAMPLE_SIZES.get(task_name, DEFAULT_SAMPLE_SIZE)


def sample_indices(num_examples: int, sample_size: int, seed: int) -> list[int]:
    """All indices if the set is small enough, else a seeded sample without replacement, in dataset order."""
    if sample_size < 1:
        raise SubnetsError(f"The attack sample size must be positive; got {sample_size}.")
    if sample_size >= num_examples:
        return list(range(num_examples))
    return sorted(np.random.default_rng(seed).choice(num_examples, sample_size, replace=False).tolist())
