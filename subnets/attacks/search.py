"""TextAttack's greedy search with word-importance ranking (GreedyWordSwapWIR) under an untargeted goal.

One example is attacked as `textattack/search_methods/greedy_word_swap_wir.py` does, with the goal score of
UntargetedClassification, score(x) = 1 - p_y(x), and success when the prediction is not the label:
1. query the original; if the model already gets it wrong the example is *skipped*;
2. rank the modifiable positions (pre-transformation constraints: attacked field, stop words) by importance:
   `delete` (TextFooler, TextBugger, BAE): score of the text without the word; `weighted-saliency` (PWWS,
   Ren et al. 2019 Eq. 7-8): softmax over positions of the score with the word replaced by UNK, times the
   best score among the word's allowed swaps;
3. walk the ranking; at each position build the swaps of the current text, keep those every constraint allows,
   score them in one batched call; the best one is kept if it beats the current score, else the position is
   passed over; once the best one succeeds, the attack returns, among the succeeding swaps, the one with the
   highest sentence similarity when a sentence-similarity constraint scored them, else the best-scoring one;
4. the attack *fails* when the ranking is used up or the query budget is spent.
Queries are counted as TextAttack counts them: every text sent to the goal function, the original included
(a text scored twice counts twice but runs the model once).

`GreedyWordSwapWIR.search` is the attack of one example as a generator: it yields each list of texts it needs
scored and is sent back their probabilities, so that a scheduler (`runner.run_attack`) can score the requests of
several examples in one model call; `attack` drives it alone. Both give the same result for an example.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Generator, Literal, Sequence

import numpy as np

from ..errors import SubnetsError
from .candidates import CandidateGenerator
from .constraints import Constraint, RepeatModification, StopwordModification
from .text import AttackText
from .wrapper import Classifier

SUCCEEDED, FAILED, SKIPPED = "successful", "failed", "skipped"
Ranking = Literal["delete", "weighted-saliency"]


@dataclass
class AttackResult:
    idx: int
    original: tuple[str, ...]
    perturbed: tuple[str, ...]
    label: int
    original_prediction: int
    perturbed_prediction: int
    status: str
    queries: int
    num_words: int
    num_perturbed: int
    original_score: float = 0.0
    perturbed_score: float = 0.0

    @property
    def perturbed_word_ratio(self) -> float:
        return self.num_perturbed / self.num_words if self.num_words else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "original": list(self.original), "perturbed": list(self.perturbed),
                "perturbed_word_ratio": self.perturbed_word_ratio}

    @classmethod
    def from_json(cls, record: dict) -> AttackResult:
        fields = {k: v for k, v in record.items() if k != "perturbed_word_ratio"}
        return cls(**{**fields, "original": tuple(fields["original"]), "perturbed": tuple(fields["perturbed"])})


# Generators that yield lists of texts to score, are sent their probabilities, and return their value.
Scoring = Generator[list[tuple[str, ...]], np.ndarray, np.ndarray]
Search = Generator[list[tuple[str, ...]], np.ndarray, AttackResult]


class QueryCounter:
    """The goal function's bookkeeping for one example: query count, budget, and a cache of model outputs."""

    def __init__(self, budget: int | None):
        self.budget = budget
        self.queries = 0
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def search_over(self) -> bool:
        return self.budget is not None and self.queries >= self.budget

    def probs(self, texts: Sequence[tuple[str, ...]]) -> Scoring:
        """Probabilities for the longest prefix of `texts` the budget allows (all of them without a budget); yields
        the texts not scored before and expects their probabilities sent back."""
        if self.budget is not None:
            texts = texts[:max(self.budget - self.queries, 0)]
        self.queries += len(texts)
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            self._cache.update(zip(new, (yield new)))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


class GreedyWordSwapWIR:
    """A configured attack: candidate generator + constraints + importance ranking + query budget."""

    def __init__(self, classifier: Classifier, candidates: CandidateGenerator, *, ranking: Ranking,
                 pre_constraints: Sequence[StopwordModification | RepeatModification] = (),
                 constraints: Sequence[Constraint] = (), query_budget: int | None = None, seed: int = 0,
                 unk_token: str = "[UNK]"):
        if query_budget is not None and query_budget < 1:
            raise SubnetsError(f"query_budget must be a positive number of queries or None; got {query_budget}.")
        if ranking not in ("delete", "weighted-saliency"):
            raise SubnetsError(f"Unknown ranking '{ranking}'; expected delete or weighted-saliency.")
        self.classifier = classifier
        self.candidates = candidates
        self.ranking = ranking
        self.pre_constraints = list(pre_constraints)
        self.constraints = list(constraints)
        self.query_budget = query_budget
        self.seed = seed
        self.unk_token = unk_token
        self.config: dict = {}  # its recipe and settings (recipes.Kit.compose; metrics.json's attack_config)

    def settings(self) -> dict:
        """The search's settings and every component's own report (`config()`), in TextAttack's order."""
        return {"ranking": self.ranking, "query_budget": self.query_budget, "seed": self.seed,
                "constraints": {c.name: c.config() for c in (*self.pre_constraints, *self.constraints)},
                "candidates": self.candidates.config()}

    def modifiable_positions(self, text: AttackText) -> list[int]:
        """Positions in the last field (the sentence, or the hypothesis of a pair) the pre-constraints allow."""
        last = len(text.original) - 1
        return [p for p, w in enumerate(text.words)
                if w.field == last and all(c.modifiable(text, p) for c in self.pre_constraints)]

    def transformations(self, original: AttackText, current: AttackText, position: int,
                        idx: int) -> tuple[list[AttackText], np.ndarray | None]:
        """The allowed swaps of `position` in `current`, and their sentence similarities when a constraint gave any."""
        if not all(c.modifiable(current, position) for c in self.pre_constraints):
            return [], None
        rng = random.Random(f"{self.seed}:{idx}:{position}")
        options = [current.replace(position, c) for c in self.candidates(current.word(position), rng)]
        similarity = None
        for constraint in self.constraints:
            if not options:
                break
            keep, scores = constraint.check(original, current, position, options)
            options = [o for o, k in zip(options, keep) if k]
            if scores is not None:
                similarity = np.asarray(scores)[keep]
            elif similarity is not None:
                similarity = similarity[keep]
        return options, similarity

    def _rank(self, text: AttackText, positions: list[int], label: int, counter: QueryCounter,
              idx: int) -> Generator[list[tuple[str, ...]], np.ndarray, list[int]]:
        """Modifiable positions, most important first (ties keep text order)."""
        filler = "" if self.ranking == "delete" else self.unk_token
        probs = yield from counter.probs([text.replace(p, filler).fields for p in positions])
        scored = positions[: len(probs)]
        if not scored:
            return []
        importance = 1.0 - probs[:, label]
        if self.ranking == "weighted-saliency":
            weights = np.exp(importance - importance.max())
            best_swap = np.zeros(len(scored))
            for i, p in enumerate(scored):
                if counter.search_over:
                    break
                options, _ = self.transformations(text, text, p, idx)
                swapped = yield from counter.probs([o.fields for o in options])
                if len(swapped):
                    best_swap[i] = float(np.max(1.0 - swapped[:, label]))
            importance = weights / weights.sum() * best_swap
        order = np.argsort(-importance, kind="stable")
        return [scored[i] for i in order]

    def attack(self, fields: Sequence[str], label: int, idx: int = 0) -> AttackResult:
        """Attack one example, every request scored by the classifier as it comes."""
        search = self.search(fields, label, idx)
        try:
            texts = next(search)
            while True:
                texts = search.send(self.classifier.predict_proba(texts))
        except StopIteration as finished:
            return finished.value

    def search(self, fields: Sequence[str], label: int, idx: int = 0) -> Search:
        """The attack of one example as a generator: yields lists of texts to score, returns the result."""
        text = AttackText.from_fields(tuple(fields))
        counter = QueryCounter(self.query_budget)
        probs = (yield from counter.probs([text.fields]))[0]
        prediction = int(probs.argmax())
        current, current_probs, status = text, probs, FAILED
        if prediction != label:
            status = SKIPPED
        else:
            order = yield from self._rank(text, self.modifiable_positions(text), label, counter, idx)
            for position in order:
                if counter.search_over:
                    break
                options, similarity = self.transformations(text, current, position, idx)
                if not options:
                    continue
                scored = yield from counter.probs([o.fields for o in options])
                if len(scored) == 0:
                    break
                by_score = np.argsort(scored[:, label], kind="stable")  # highest 1 - p_y first
                best = by_score[0]
                if scored[best, label] >= current_probs[label]:
                    continue
                current, current_probs = options[best], scored[best]
                if int(scored[best].argmax()) != label:
                    status = SUCCEEDED
                    if similarity is not None:
                        succeeded = [i for i in by_score if int(scored[i].argmax()) != label]
                        pick = max(succeeded, key=lambda i: (similarity[i], -succeeded.index(i)))
                        current, current_probs = options[pick], scored[pick]
                    break
        return AttackResult(idx=idx, original=text.fields, perturbed=current.fields, label=label,
                            original_prediction=prediction, perturbed_prediction=int(current_probs.argmax()),
                            status=status, queries=counter.queries, num_words=len(text.words),
                            num_perturbed=len(current.perturbed_positions),
                            original_score=float(1.0 - probs[label]),
                            perturbed_score=float(1.0 - current_probs[label]))
