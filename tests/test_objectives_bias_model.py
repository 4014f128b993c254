"""Bias-only models: overlap features on hand examples, the classifier, cross-fitted caches, the CLI."""

import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from subnets.errors import SubnetsError
from subnets.objectives import PredictionCache
from subnets.objectives.bias_model import SoftmaxRegression, bias_fields, train_bias_model
from subnets.objectives.features import OVERLAP_FEATURES, BagOfWords, overlap_features, word_similarity, words
from subnets.tasks import get_task


def feature(premise: str, hypothesis: str) -> dict[str, float]:
    return dict(zip(OVERLAP_FEATURES, overlap_features(premise, hypothesis).tolist()))


def test_overlap_features_on_hand_examples():
    sub = feature("The doctor near the actor danced.", "The actor danced.")
    assert sub["all_in_premise"] == 1 and sub["contiguous_subsequence"] == 1 and sub["overlap_ratio"] == 1
    assert sub["min_similarity"] == 1 and sub["hypothesis_negation"] == 0
    scrambled = feature("The lawyer saw the artist.", "The artist saw the lawyer.")
    assert scrambled["all_in_premise"] == 1 and scrambled["contiguous_subsequence"] == 0
    partial = feature("A man plays a guitar.", "A woman doesn't play drums.")
    assert partial["all_in_premise"] == 0 and partial["hypothesis_negation"] == 1
    assert partial["overlap_ratio"] == pytest.approx(1 / 6)  # a / woman / does / not / play / drums
    assert partial["min_similarity"] == 0  # "drums" shares no trigram with any premise word
    assert 1 / 6 < partial["mean_similarity"] < 1  # "play" ~ "plays" counts partially
    assert feature("Long premise with many words here.", "Short.")["log_length_ratio"] == pytest.approx(np.log(7 / 2))
    assert words("He didn't GO") == ["he", "did", "not", "go"]
    assert word_similarity("run", "run") == 1 and 0 < word_similarity("run", "running") < 1


def test_bag_of_words_and_softmax_regression_learn_a_lexical_cue():
    texts = ["nobody is here", "a man is here", "nobody sleeps", "a cat sleeps", "nobody eats", "a dog eats"] * 5
    labels = np.array([1, 0, 1, 0, 1, 0] * 5)
    bow = BagOfWords(min_count=2).fit(texts)
    x = bow.transform(texts)
    assert x.shape == (30, len(bow.vocabulary)) and "nobody" in bow.vocabulary and "a man" in bow.vocabulary
    model = SoftmaxRegression(2, l2=0.1).fit(x, labels)
    probs = model.predict_proba(bow.transform(["nobody runs", "a bird runs"]))
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert probs[0, 1] > 0.8 and probs[1, 0] > 0.8


def toy_nli(n: int, seed: int = 0) -> datasets.Dataset:
    """Entailment exactly when the hypothesis is copied from the premise (a pure overlap bias)."""
    rng = np.random.default_rng(seed)
    vocab = "man woman dog cat runs sleeps eats plays park house red blue old young".split()
    rows = {"idx": [], "premise": [], "hypothesis": [], "label": []}
    for i in range(n):
        premise = rng.choice(vocab, size=8).tolist()
        label = int(rng.integers(3))
        hypothesis = premise[2:5] if label == 0 else rng.choice(vocab, size=3).tolist()
        rows["idx"].append(1000 + 3 * i)
        rows["premise"].append(" ".join(premise))
        rows["hypothesis"].append(" ".join(hypothesis))
        rows["label"].append(label)
    return datasets.Dataset.from_dict(rows)


def test_cross_fitted_overlap_bias_model_predicts_every_training_example():
    train, evaluation = toy_nli(300), toy_nli(90, seed=1)
    result = train_bias_model(get_task("mnli"), train, evaluation, bias_type="overlap", folds=3, l2=1.0)
    cache = result.cache
    assert sorted(cache.ids.tolist()) == sorted(train["idx"]) and cache.probs.shape == (300, 3)
    np.testing.assert_allclose(cache.probs.sum(1), 1, rtol=1e-5)
    entail = np.asarray(train["label"])[np.argsort(train["idx"])] == 0
    assert cache.probs[entail, 0].mean() > 0.9  # copied hypotheses are recognised out of fold
    assert result.metrics["eval_accuracy"] > 0.5 and result.metrics["train_crossfit_accuracy"] > 0.5
    cache.check_alignment(train, "mnli", 3)


def test_claim_only_bias_model_reads_the_claim_field():
    claims = ["the film was not released", "the city is large", "he never won the award", "the river is long"]
    evidence = ["the film was released in 1999", "the city is large", "he won the award", "the river is long"]
    n = 60
    train = datasets.Dataset.from_dict({
        "idx": list(range(n)), "claim": [claims[i % 4] for i in range(n)],
        "evidence": [evidence[(i * 7) % 4] for i in range(n)], "label": [1 if i % 2 == 0 else 0 for i in range(n)]})
    result = train_bias_model(get_task("vitaminc"), train, bias_type="hypothesis_only", folds=3, l2=0.1)
    assert result.metrics["features"] == ["binary unigram+bigram bag of words of 'claim'"]
    negated = np.asarray(train["label"]) == 1  # claims with a negation are REFUTES
    assert result.cache.probs[negated, 1].mean() > 0.8 and result.cache.probs[~negated, 0].mean() > 0.8


def test_bias_fields_follow_the_task_spec():
    assert bias_fields(get_task("mnli")) == ("premise", "hypothesis")
    assert bias_fields(get_task("vitaminc")) == ("evidence", "claim")
    assert bias_fields(get_task("qqp")) == ("question1", "question2")
    with pytest.raises(SubnetsError, match="sentence-pair task"):
        bias_fields(get_task("sst2"))
    with pytest.raises(SubnetsError, match="bias_type"):
        train_bias_model(get_task("mnli"), toy_nli(10), bias_type="premise_only")


def data_dir() -> Path:
    return Path(os.environ.get("SUBNETS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.slow
def test_train_bias_model_cli_on_real_mnli(tmp_path):
    if not (data_dir() / "glue" / "MNLI").is_dir():
        pytest.skip("real data folder not found")
    from subnets.pipelines.train_bias_model import main

    metrics = main(["--task_name", "mnli", "--data_dir", str(data_dir()), "--output_dir", str(tmp_path),
                    "--folds", "3"])
    assert metrics["eval_accuracy"] > 0.45  # chance is about 0.35 on three balanced classes
    cache = PredictionCache.load(tmp_path / "bias_predictions.safetensors")
    assert cache.task == "mnli" and len(cache.ids) == metrics["train_examples"]
    assert json.loads((tmp_path / "metrics.json").read_text())["fingerprint"] == cache.fingerprint
