"""The attack search, candidates, metrics and runner on hand-made classifiers (no model, no USE/POS unless said)."""

import json
import math
import random
import zlib

import numpy as np
import pytest

from subnets.attacks import (
    GreedyWordSwapWIR,
    HFClassifier,
    build_attack,
    comparison_table,
    run_attack,
    sample_indices,
    summarize,
    summary_table,
)
from subnets.attacks.candidates import CharacterBugs, EmbeddingSwap
from subnets.attacks.embeddings import ListedNeighbours
from subnets.attacks.search import FAILED, SKIPPED, SUCCEEDED, AttackResult
from subnets.attacks.stopwords import TEXTFOOLER_STOP_WORDS
from subnets.attacks.text import split_words
from subnets.errors import SubnetsError

NEIGHBOURS = {
    "great": ["fine", "awful", "terrible"],
    "movie": ["film", "picture"],
    "film": ["movie"],
    "funny": ["amusing", "dull"],
    "boring": ["dull", "tedious", "exciting"],
    "plot": ["storyline"],
    "the": ["a"],  # a stop word: must never be replaced even though it has neighbours
}
# Word weights of the lexicon classifier: logit of class 1 = sum of weights of the words in the last field.
WEIGHTS = {"great": 1.0, "fine": 0.5, "awful": -1.0, "terrible": -3.0, "funny": 1.0, "amusing": 0.8, "dull": -2.0,
           "boring": -1.0, "tedious": -1.2, "exciting": 2.0, "film": 0.1}


class LexiconClassifier:
    """p(class 1) = sigmoid(sum of word weights of the last field); counts the texts it is asked to score."""

    def __init__(self, weights=WEIGHTS):
        self.weights = weights
        self.scored = 0

    def predict_proba(self, inputs):
        self.scored += len(inputs)
        logits = np.array([sum(self.weights.get(w.text.lower(), 0.0) for w in split_words(x) if w.field == len(x) - 1)
                           for x in inputs])
        p1 = 1 / (1 + np.exp(-logits))
        return np.stack([1 - p1, p1], axis=1)


class FixedSimilarity:
    """A stand-in sentence-similarity constraint: passes everything, scores each swap by a table."""

    name = "use"

    def __init__(self, table):
        self.table = table

    def check(self, original, current, position, options):
        scores = np.array([self.table.get(o.word(position), 0.0) for o in options])
        return np.ones(len(options), dtype=bool), scores


class ConstantClassifier:
    def predict_proba(self, inputs):
        return np.tile([0.3, 0.7], (len(inputs), 1))


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "attack").mkdir()
    (tmp_path / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(NEIGHBOURS))
    return tmp_path


def textfooler(classifier, data_dir, **kw):
    """TextFooler's search, swap and word constraints; POS and USE (tested in test_attacks_constraints) off."""
    return build_attack("textfooler", classifier, data_dir=data_dir, disable=("pos", "use"), **kw)


def test_textfooler_hand_computed_flip_and_queries(data_dir):
    clf = LexiconClassifier()
    result = textfooler(clf, data_dir).attack(("the movie was great",), label=1, idx=7)
    # Queries: original (1) + deletion of the non-stop words "movie", "great" (2) + the 3 candidates of "great",
    # the most important word. "awful" and "terrible" both flip; without a sentence-similarity score TextAttack
    # keeps the best-scoring (lowest p_y) one.
    assert result.status == SUCCEEDED
    assert result.perturbed == ("the movie was terrible",)
    assert result.queries == 6 == clf.scored
    assert (result.num_words, result.num_perturbed, result.perturbed_prediction) == (4, 1, 0)
    assert result.original_score == pytest.approx(1 - 1 / (1 + math.exp(-1.0)))
    # A similarity score decides among flipping swaps: the most similar one wins (here: made up, "awful" highest).
    picked = GreedyWordSwapWIR(LexiconClassifier(), EmbeddingSwap(ListedNeighbours(data_dir), 50), ranking="delete",
                               constraints=[FixedSimilarity({"awful": 0.9, "terrible": 0.5, "fine": 1.0})])
    assert picked.attack(("the movie was great",), label=1).perturbed == ("the movie was awful",)


def test_greedy_keeps_best_non_flipping_swap_then_flips(data_dir):
    # "funny" (1.0) and "boring" (-1.0) cancel; label 1 is predicted only thanks to "film" (0.1).
    result = textfooler(LexiconClassifier(), data_dir, max_ratio=1.0).attack(
        ("funny but boring film",), label=1)
    assert result.status == SUCCEEDED
    assert result.perturbed_prediction == 0
    assert result.label == 1


def test_ratio_budget_and_misclassified(data_dir):
    sentence = ("the movie was great",)
    # A cap of ceil(0.2 * 4) = 1 word still allows the single flipping swap; with weights that need two swaps
    # the cap stops it (MaxWordsPerturbed).
    capped = textfooler(LexiconClassifier(), data_dir, max_ratio=0.2).attack(sentence, label=1)
    assert capped.status == SUCCEEDED and capped.num_perturbed == 1
    two_swaps = {**WEIGHTS, "great": 2.0, "fine": 1.0, "awful": 0.5, "terrible": 0.5, "film": -0.8}
    uncapped = textfooler(LexiconClassifier(two_swaps), data_dir).attack(("great movie",), label=1)
    assert uncapped.status == SUCCEEDED and uncapped.num_perturbed == 2
    two_needed = textfooler(LexiconClassifier(two_swaps), data_dir, max_ratio=0.2).attack(("great movie",), label=1)
    assert two_needed.status == FAILED and two_needed.num_perturbed == 1
    # A budget of 4 queries: original + 2 deletions + only the first candidate ("fine", no flip).
    clf = LexiconClassifier()
    budget = textfooler(clf, data_dir, query_budget=4).attack(sentence, label=1)
    assert budget.status == FAILED and budget.queries == 4 == clf.scored
    # Already misclassified: skipped after the single query on the original, nothing changed.
    skipped = textfooler(LexiconClassifier(), data_dir).attack(sentence, label=0)
    assert (skipped.status, skipped.queries, skipped.perturbed) == (SKIPPED, 1, sentence)


def test_constant_classifier_metrics(data_dir):
    attack = textfooler(ConstantClassifier(), data_dir)
    examples = [(i, ("the movie was great and funny",), label) for i, label in enumerate([1, 1, 1, 0])]
    results = run_attack(attack, examples)
    assert [r.status for r in results] == [FAILED, FAILED, FAILED, SKIPPED]
    s = summarize(results)
    assert s["clean_accuracy"] == pytest.approx(0.75)
    assert s["accuracy_under_attack"] == pytest.approx(0.75)  # nothing flips a constant model
    assert s["attack_success_rate"] == 0.0
    assert s["perturbed_word_ratio"] == 0.0


def _result(status, queries=10, perturbed=0, words=10):
    return AttackResult(0, ("x",), ("y",), 1, 1, 0, status, queries, words, perturbed)


def test_summary_hand_computed():
    results = ([_result(SUCCEEDED, queries=q, perturbed=p) for q, p in [(10, 1), (20, 2), (30, 3), (40, 1),
                                                                        (50, 2), (60, 3)]]
               + [_result(FAILED, queries=100), _result(FAILED, queries=100)]
               + [_result(SKIPPED, queries=1), _result(SKIPPED, queries=1)])
    s = summarize(results)
    assert (s["num_successful"], s["num_failed"], s["num_skipped"]) == (6, 2, 2)
    assert s["clean_accuracy"] == pytest.approx(0.8)
    assert s["accuracy_under_attack"] == pytest.approx(0.2)
    assert s["attack_success_rate"] == pytest.approx(0.75)
    assert s["attack_success_rate"] == pytest.approx((s["clean_accuracy"] - s["accuracy_under_attack"])
                                                     / s["clean_accuracy"])
    assert s["avg_queries"] == pytest.approx((210 + 200) / 8)  # skipped examples excluded, as in TextAttack
    assert s["perturbed_word_ratio"] == pytest.approx(12 / 60)  # successful attacks only
    rows = {cells[0]: cells[1] for cells in (line.strip("|").split("|") for line in summary_table(s).splitlines()
                                             if line.startswith("|"))}
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    # TextAttack prints str(round(value, 2)): "80.0%", not "80.00%".
    assert (rows["Original accuracy:"], rows["Accuracy under attack:"]) == ("80.0%", "20.0%")
    assert (rows["Attack success rate:"], rows["Avg num queries:"]) == ("75.0%", "51.25")
    assert "| dense | 80.0 | 20.0 | 75.0 | 51.2 | 20.0 |" in comparison_table({"dense": s})


SENTENCES = ["the movie was great", "a funny film with a boring plot", "great funny movie", "the plot was boring",
             "The Movie is great but the plot is boring", "film"]


def _check_constraints(result, candidates, max_ratio, label):
    original_words, perturbed_words = split_words(result.original), split_words(result.perturbed)
    assert len(original_words) == len(perturbed_words)
    changed = [(o, p) for o, p in zip(original_words, perturbed_words) if o.text != p.text]
    for o, p in changed:
        assert o.field == len(result.original) - 1, "only the last field (hypothesis) may change"
        assert o.text not in TEXTFOOLER_STOP_WORDS
        assert p.text in candidates(o.text, random.Random(0))
    assert len(changed) == result.num_perturbed <= math.ceil(max_ratio * len(original_words))
    assert result.label == label
    assert result.original[:-1] == result.perturbed[:-1]


@pytest.mark.parametrize("ratio", [0.3, 0.6, 1.0])
def test_attack_changes_only_allowed_words(data_dir, ratio):
    attack = textfooler(LexiconClassifier(), data_dir, max_ratio=ratio)
    examples = [(i, (s,), 1) for i, s in enumerate(SENTENCES)]
    examples += [(10 + i, ("the film was funny", s), 1) for i, s in enumerate(SENTENCES)]
    results = run_attack(attack, examples)
    assert any(r.status == SUCCEEDED for r in results)
    for result, (_, _, label) in zip(results, examples):
        _check_constraints(result, attack.candidates, ratio, label)


def test_attack_on_tiny_models_respects_constraints(tiny, data_dir):
    model, tokenizer = tiny
    attack = textfooler(HFClassifier(model, tokenizer, batch_size=4), data_dir, max_ratio=0.5)
    examples = [(i, (s,), i % 2) for i, s in enumerate(SENTENCES)]
    results = run_attack(attack, examples)
    assert sum(r.status != SKIPPED for r in results) > 0
    for result, (_, _, label) in zip(results, examples):
        _check_constraints(result, attack.candidates, 0.5, label)
        assert result.queries >= 1


def test_character_bugs_are_textbuggers_and_seeded():
    word = "wonderful"
    bugs = CharacterBugs()(word, random.Random("3:0:1"))
    assert bugs == CharacterBugs()(word, random.Random("3:0:1"))
    assert word not in bugs
    inserted, deleted, swapped, *homoglyphs = bugs
    assert inserted.replace(" ", "") == word and inserted.count(" ") == 1 and not inserted.startswith(("w ", " "))
    assert len(deleted) == len(word) - 1 and deleted[0] == word[0] and deleted[-1] == word[-1]
    assert sorted(swapped) == sorted(word) and sum(a != b for a, b in zip(swapped, word)) == 2
    assert swapped[0] == word[0] and swapped[-1] == word[-1]
    assert len(homoglyphs) == len(word)  # every letter has a homoglyph: one candidate per position
    assert all(len(h) == len(word) and sum(a != b for a, b in zip(h, word)) == 1 for h in homoglyphs)
    assert CharacterBugs()("ok", random.Random(0)) == ["оk", "o𝒌"]


class HashClassifier:
    """A fixed pseudo-random function of the text: any change of the candidate strings changes the outcome."""

    def predict_proba(self, inputs):
        p1 = np.array([zlib.crc32(" ".join(x).encode()) % 1000 / 1000 for x in inputs])
        return np.stack([1 - p1, p1], axis=1)


def test_textbugger_is_deterministic_for_a_seed(data_dir):
    examples = [(i, (s,), label) for i, s in enumerate(SENTENCES * 3) for label in (0, 1)]

    def run(seed):
        attack = build_attack("textbugger", HashClassifier(), data_dir=data_dir, seed=seed, disable=("use",))
        return [r.to_json() for r in run_attack(attack, examples)]

    first = run(5)
    assert first == run(5)
    assert first != run(6)
    assert any(r["status"] == SUCCEEDED for r in first)


def test_wrapper_matches_unbatched_model(tiny):
    import torch

    model, tokenizer = tiny
    inputs = [("a much longer sentence than the others here", "and a hypothesis"), ("short", "x"),
              ("medium length one", "another hypothesis text")]
    probs = HFClassifier(model, tokenizer, batch_size=2).predict_proba(inputs)
    with torch.inference_mode():
        for row, (a, b) in zip(probs, inputs):
            expected = model(**tokenizer(a, b, return_tensors="pt")).logits.softmax(-1)[0].numpy()
            np.testing.assert_allclose(row, expected, atol=1e-5)
    with pytest.raises(SubnetsError):
        HFClassifier(model, tokenizer).predict_proba([("one",), ("two", "fields")])


def test_sampling_and_jsonl(tmp_path, data_dir):
    assert sample_indices(872, 872, seed=0) == list(range(872))
    picked = sample_indices(5000, 1000, seed=3)
    assert picked == sample_indices(5000, 1000, seed=3) and picked == sorted(set(picked)) and len(picked) == 1000
    assert picked != sample_indices(5000, 1000, seed=4)
    path = tmp_path / "out" / "examples.jsonl"
    run_attack(textfooler(LexiconClassifier(), data_dir), [(3, ("the movie was great",), 1)], jsonl_path=path)
    record = json.loads(path.read_text().splitlines()[0])
    assert record["original"] == ["the movie was great"] and record["perturbed"] == ["the movie was terrible"]
    assert (record["idx"], record["label"], record["perturbed_prediction"], record["status"]) == (3, 1, 0, SUCCEEDED)


def test_bad_settings_raise(tmp_path, data_dir):
    with pytest.raises(SubnetsError, match="counterfitted_neighbors.json"):
        build_attack("textfooler", LexiconClassifier(), data_dir=tmp_path / "elsewhere")
    with pytest.raises(SubnetsError, match="Unknown attack"):
        build_attack("deepwordbug", LexiconClassifier())
    with pytest.raises(SubnetsError, match="perturbed-word ratio"):
        textfooler(LexiconClassifier(), data_dir, max_ratio=0)
    with pytest.raises(SubnetsError, match="Unknown constraint"):
        build_attack("textfooler", LexiconClassifier(), data_dir=tmp_path, disable=("grammar",))
