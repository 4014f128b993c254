"""Attacking several examples together (`run_attack(batch_size=N)`) gives every example the result it gets alone.

The four recipes run with all their constraints (real USE and spaCy POS) on tiny random models; PWWS runs on a
synthetic WordNet written here, and on the real one where it is installed.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_attacks_wordnet import _write_pos

from subnets.attacks import ATTACKS, HFClassifier, build_attack, read_results, run_attack
from subnets.attacks.wordnet import DEFAULT_WORDNET_DIR
from subnets.errors import SubnetsError

NEIGHBOURS = {
    "great": ["fine", "good", "awful", "terrible", "superb"],
    "movie": ["film", "picture", "flick"],
    "film": ["movie", "picture"],
    "funny": ["amusing", "dull", "hilarious"],
    "boring": ["dull", "tedious", "exciting"],
    "plot": ["storyline", "story"],
    "acting": ["performance", "playing"],
    "quick": ["fast", "speedy", "slow"],
    "good": ["nice", "fine", "bad"],
}
SENTENCES = [
    ("the movie was great and the acting was good",),
    ("a funny film with a boring plot",),
    ("quick and funny , a great movie",),
    ("the plot was boring but the acting was great",),
    ("good film",),
    ("a great movie with funny acting and a quick plot that never gets boring",),
    ("boring",),
    ("the film is good , the plot is quick and the movie is funny",),
]
PAIRS = [("a premise about a movie", s[0]) for s in SENTENCES[:4]]


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "attack").mkdir()
    (tmp_path / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(NEIGHBOURS))
    return tmp_path


@pytest.fixture
def synthetic_wordnet(tmp_path):
    folder = tmp_path / "wordnet"
    folder.mkdir()
    _write_pos(folder, "noun", "n", [["film", "movie", "picture", "flick"], ["plot", "secret_plan"],
                                     ["acting", "playing", "performing"]])
    _write_pos(folder, "verb", "v", [["film", "shoot"], ["plot", "plan"]])
    _write_pos(folder, "adj", "a", [["good", "nice", "full"], ["quick", "speedy", "fast"], ["funny", "amusing"],
                                    ["great", "outstanding"], ["boring", "tedious", "dull"]])
    _write_pos(folder, "adv", "r", [])
    return folder


def _examples(classifier, texts):
    """Labels equal to the model's predictions, so that no example is skipped."""
    predictions = classifier.predict_proba(texts).argmax(1)
    return [(i, fields, int(p)) for i, (fields, p) in enumerate(zip(texts, predictions))]


def _attack_all_ways(tmp_path, model, tokenizer, recipe, texts, **kw):
    """JSONL text and classifier call count of one attack over `texts` per batch size (1 = one at a time)."""
    runs = {}
    for batch_size in (1, 3, len(texts)):
        classifier = HFClassifier(model, tokenizer, batch_size=8)
        attack = build_attack(recipe, classifier, seed=2, **kw)
        path = tmp_path / f"{recipe}-{len(texts[0])}-{batch_size}.jsonl"
        results = run_attack(attack, _examples(classifier, texts), jsonl_path=path, batch_size=batch_size)
        assert read_results(path) == results
        runs[batch_size] = (path.read_text(), classifier.stats.calls)
    return runs


def _wordnet_kwargs(recipe, request):
    if recipe != "pwws":
        return {}
    return {"wordnet_dir": request.getfixturevalue("synthetic_wordnet")}


@pytest.mark.parametrize("recipe", ATTACKS)
def test_batched_attack_equals_one_at_a_time(tmp_path, tiny, data_dir, recipe, request):
    model, tokenizer = tiny
    for texts in (SENTENCES, PAIRS):
        runs = _attack_all_ways(tmp_path, model, tokenizer, recipe, texts, data_dir=data_dir,
                                **_wordnet_kwargs(recipe, request))
        alone, alone_calls = runs[1]
        records = [json.loads(line) for line in alone.splitlines()]
        assert len(records) == len(texts) and sum(r["queries"] for r in records) > 2 * len(texts)
        for batch_size, (text, calls) in runs.items():
            assert text == alone, f"{recipe}: batch size {batch_size} changed a result"
            if batch_size > 1:
                assert calls < alone_calls  # the examples did share model calls


@pytest.mark.skipif(not (Path(DEFAULT_WORDNET_DIR) / "data.noun").is_file(),
                    reason="WordNet 3.0 (apt-get install wordnet-base) is not installed")
def test_batched_pwws_on_real_wordnet(tmp_path, tiny_bert):
    runs = _attack_all_ways(tmp_path, *tiny_bert, "pwws", SENTENCES)
    assert len({text for text, _ in runs.values()}) == 1


def test_classifier_scores_a_text_alike_in_any_company(tiny):
    model, tokenizer = tiny
    classifier = HFClassifier(model, tokenizer, batch_size=4)
    texts = [s for s in SENTENCES] + [("x " * n,) for n in range(1, 30, 3)]
    alone = np.stack([classifier.predict_proba([t])[0] for t in texts])
    together = classifier.predict_proba(texts[::-1])[::-1]
    assert np.array_equal(alone, together)


def test_batched_attack_resumes_after_a_kill(tmp_path, tiny_bert, data_dir, monkeypatch):
    model, tokenizer = tiny_bert
    classifier = HFClassifier(model, tokenizer, batch_size=8)
    examples = _examples(classifier, SENTENCES)
    whole = tmp_path / "whole.jsonl"
    run_attack(build_attack("textfooler", classifier, data_dir=data_dir), examples, jsonl_path=whole, batch_size=3)
    calls_needed = classifier.stats.calls
    predict = HFClassifier.predict_proba

    def dying(self, texts):
        if self.stats.calls >= calls_needed // 2:
            raise KeyboardInterrupt  # the kill arrives half-way, with three examples in flight
        return predict(self, texts)

    killed = tmp_path / "killed.jsonl"
    classifier.stats.calls = 0
    monkeypatch.setattr(HFClassifier, "predict_proba", dying)
    with pytest.raises(KeyboardInterrupt):
        run_attack(build_attack("textfooler", classifier, data_dir=data_dir), examples, jsonl_path=killed,
                   batch_size=3)
    monkeypatch.undo()
    assert 0 < len(read_results(killed)) < len(examples)
    run_attack(build_attack("textfooler", classifier, data_dir=data_dir), examples, jsonl_path=killed, batch_size=5)
    assert killed.read_text() == whole.read_text()


def test_bad_batch_size(tmp_path, data_dir, tiny_bert):
    attack = build_attack("textfooler", HFClassifier(*tiny_bert), data_dir=data_dir)
    for bad in (0, -2, 1.5):
        with pytest.raises(SubnetsError, match="attack batch size"):
            run_attack(attack, [(0, ("good film",), 1)], jsonl_path=tmp_path / "never.jsonl", batch_size=bad)
    assert not (tmp_path / "never.jsonl").exists()


def test_api_attack_takes_the_batch_size(tmp_path, tiny_data_dir):
    import subnets
    from subnets.models import tiny_model
    from subnets.toydata import write_toy_neighbours

    model, tokenizer = tiny_model("bert", label_names=("negative", "positive"))
    write_toy_neighbours(tiny_data_dir)
    task = subnets.load_task("sst2")
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir)
    lines = {}
    for batch_size in (1, 4):
        prefix = tmp_path / f"attack-{batch_size}"
        subnets.attack(model, tokenizer, task, data, attack="textbugger", samples=8, data_dir=str(tiny_data_dir),
                       output_prefix=prefix, batch_size=batch_size)
        lines[batch_size] = Path(f"{prefix}.jsonl").read_text()
    assert lines[1] == lines[4] and len(lines[1].splitlines()) == 8
    with pytest.raises(SubnetsError, match="attack_batch_size must be at least 1; got 0"):  # AttackOptions
        subnets.attack(model, tokenizer, task, data, attack="textbugger", samples=8, data_dir=str(tiny_data_dir),
                       output_prefix=tmp_path / "bad", batch_size=0)
    assert not (tmp_path / "bad.jsonl").exists()


def test_an_attack_asked_to_use_the_cpu_stays_there_where_cuda_is_available(tmp_path, tiny_data_dir, monkeypatch):
    # CUDA simulated and not refused by the environment: without use_cpu the wrapper would move the model to cuda:0
    import subnets
    from subnets.models import tiny_model
    from subnets.toydata import write_toy_neighbours

    model, tokenizer = tiny_model("bert", label_names=("negative", "positive"))
    write_toy_neighbours(tiny_data_dir)
    task = subnets.load_task("sst2")
    data = subnets.load_data(task, tokenizer, data_dir=tiny_data_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("SUBNETS_USE_CPU", "0")
    subnets.attack(model, tokenizer, task, data, attack="textbugger", samples=2, data_dir=str(tiny_data_dir),
                   output_prefix=tmp_path / "cpu", use_cpu=True)
    assert next(model.parameters()).device == torch.device("cpu")
    assert len(Path(f"{tmp_path / 'cpu'}.jsonl").read_text().splitlines()) == 2
