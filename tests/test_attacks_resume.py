"""A killed attack resumes where it stopped and ends with an uninterrupted run's results."""

import json

import numpy as np
import pytest

from subnets.attacks import build_attack, read_results, run_attack, summarize
from subnets.attacks.text import split_words
from subnets.errors import SubnetsError

WEIGHTS = {"great": 1.0, "fine": 0.5, "awful": -1.0, "terrible": -3.0, "funny": 1.0, "amusing": 0.8, "dull": -2.0,
           "boring": -1.0, "film": 0.1}
NEIGHBOURS = {"great": ["fine", "awful", "terrible"], "movie": ["film"], "funny": ["amusing", "dull"],
              "boring": ["dull"]}
EXAMPLES = [(i, (s,), label) for i, (s, label) in enumerate(
    [("the movie was great", 1), ("funny movie", 1), ("boring movie", 0), ("a great funny movie", 1),
     ("great", 0), ("funny but boring film", 1)])]


class Lexicon:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def predict_proba(self, inputs):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # the kill arrives in the middle of an example
        logits = np.array([sum(WEIGHTS.get(w.text, 0.0) for w in split_words(x)) for x in inputs])
        p1 = 1 / (1 + np.exp(-logits))
        return np.stack([1 - p1, p1], axis=1)


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "attack").mkdir()
    (tmp_path / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(NEIGHBOURS))
    return tmp_path


def attack(classifier, data_dir, **kw):
    return build_attack("textbugger", classifier, data_dir=data_dir, disable=("use",), seed=3, **kw)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, data_dir):
    whole = run_attack(attack(Lexicon(), data_dir), EXAMPLES, jsonl_path=tmp_path / "whole.jsonl")
    path = tmp_path / "killed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_attack(attack(Lexicon(fail_after=12), data_dir), EXAMPLES, jsonl_path=path)
    finished = read_results(path)
    assert 0 < len(finished) < len(EXAMPLES)
    with path.open("a") as f:
        f.write('{"idx": 9, "orig')  # a line cut by the kill: dropped, its example attacked again
    counting = Lexicon()
    resumed_attack = attack(counting, data_dir)
    resumed = run_attack(resumed_attack, EXAMPLES, jsonl_path=path)
    assert [r.to_json() for r in resumed] == [r.to_json() for r in whole]
    assert summarize(resumed) == summarize(whole)
    assert read_results(path) == resumed and path.read_text().count("\n") == len(EXAMPLES)
    # nothing attacked twice: the resumed run asked the model only about the unfinished examples
    fresh = Lexicon()
    run_attack(attack(fresh, data_dir), EXAMPLES[len(finished):])
    assert counting.calls == fresh.calls


def test_resume_refuses_another_configuration(tmp_path, data_dir):
    path = tmp_path / "run.jsonl"
    run_attack(attack(Lexicon(), data_dir), EXAMPLES[:2], jsonl_path=path)
    with pytest.raises(SubnetsError, match="differently configured"):
        run_attack(attack(Lexicon(), data_dir, query_budget=5), EXAMPLES[:2], jsonl_path=path)
    with pytest.raises(SubnetsError, match="not this run's example"):
        run_attack(attack(Lexicon(), data_dir), EXAMPLES[1:], jsonl_path=path)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("not json\n")
    with pytest.raises(SubnetsError, match="not an attack results file"):
        run_attack(attack(Lexicon(), data_dir), EXAMPLES, jsonl_path=foreign)
