"""Each TextAttack constraint rejects and accepts hand-made cases; the 50-NN rule on synthetic vectors."""

import numpy as np
import pytest

from subnets.attacks.constraints import (EmbeddingCosine, PartOfSpeech, RepeatModification, SentenceSimilarity,
                                         StopwordModification, angular_similarity)
from subnets.attacks.embeddings import VectorNeighbours, nearest_neighbours
from subnets.attacks.recipes import TEXTFOOLER_MIN_COS, TEXTFOOLER_USE_THRESHOLD, shared_encoder, shared_tagger
from subnets.attacks.stopwords import NLTK_STOP_WORDS, TEXTFOOLER_STOP_WORDS
from subnets.attacks.text import AttackText
from subnets.errors import SubnetsError


def _swaps(text, position, words):
    base = AttackText.from_fields((text,))
    return base, [base.replace(position, w) for w in words]


def test_stopword_lists_and_exact_matching():
    assert (len(TEXTFOOLER_STOP_WORDS), len(NLTK_STOP_WORDS)) == (266, 179)
    assert {"afterwards", "don't", "didn't", "hasn't"} <= TEXTFOOLER_STOP_WORDS
    assert "be" not in TEXTFOOLER_STOP_WORDS and "be" in NLTK_STOP_WORDS
    text = AttackText.from_fields(("The film was not bad afterwards",))
    rule = StopwordModification(TEXTFOOLER_STOP_WORDS)
    assert [rule.modifiable(text, p) for p in range(6)] == [True, True, False, False, True, False]


def test_repeat_modification_blocks_a_changed_position():
    text = AttackText.from_fields(("a good film",))
    changed = text.replace(1, "fine")
    assert RepeatModification().modifiable(text, 1) and not RepeatModification().modifiable(changed, 1)
    assert RepeatModification().modifiable(changed, 2)


def _vectors_file(tmp_path, rows):
    path = tmp_path / "vectors.txt"
    path.write_text("".join(f"{w} " + " ".join(f"{x:.6f}" for x in v) + "\n" for w, v in rows.items()))
    return path


def test_embedding_cosine_rejects_below_half(tmp_path):
    angle = {"good": 0.0, "fine": 0.3, "decent": 1.0, "bad": 2.0}  # cos: 1, 0.955, 0.540, -0.416
    path = _vectors_file(tmp_path, {w: [np.cos(a), np.sin(a), 0.0] for w, a in angle.items()})
    source = VectorNeighbours(path)
    constraint = EmbeddingCosine(source, TEXTFOOLER_MIN_COS)
    original, options = _swaps("a good film", 1, ["fine", "decent", "bad"])
    keep, _ = constraint.check(original, original, 1, options)
    assert keep.tolist() == [True, True, False]
    assert [w for w, _ in source.neighbours("good", 50)] == ["fine", "decent", "bad"]
    assert source.cache_path.is_file()  # cached next to the vectors file, read back without pickle
    assert VectorNeighbours(path).neighbours("good", 2) == source.neighbours("good", 2)


def test_fifty_nearest_equal_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    source = VectorNeighbours(_vectors_file(tmp_path, dict(zip(words, vectors))))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i in (0, 17, 299):
        sims = unit @ unit[i]
        sims[i] = -np.inf
        expected = [words[j] for j in np.argsort(-sims, kind="stable")[:50]]
        got = source.neighbours(words[i], 50)
        assert [w for w, _ in got] == expected
        np.testing.assert_allclose([c for _, c in got], np.sort(sims)[::-1][:50], atol=1e-4)
    ids, cosines = nearest_neighbours(vectors, 5, chunk=7)  # chunking does not change the table
    assert (ids == source.ids[:, :5]).all()


def test_bad_vectors_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("good 1 2 3\nbad 1 2\n")
    with pytest.raises(SubnetsError, match="line 2 has 2 numbers"):
        VectorNeighbours(bad)
    with pytest.raises(SubnetsError, match="is not a file"):
        VectorNeighbours(tmp_path / "missing.txt")


def test_part_of_speech_keeps_tag_allows_noun_verb_swap():
    constraint = PartOfSpeech(shared_tagger())
    original, options = _swaps("they watched a great movie yesterday", 4, ["film", "quickly", "beautiful"])
    keep, _ = constraint.check(original, original, 4, options)
    assert keep.tolist() == [True, False, False]  # noun; adverb; adjective
    assert constraint.compatible("NOUN", "VERB") and not constraint.compatible("NOUN", "ADJ")
    assert not PartOfSpeech(shared_tagger(), allow_verb_noun_swap=False).compatible("NOUN", "VERB")
    # tags are NLTK's universal tagset: auxiliaries are VERB, as nltk.pos_tag(tagset="universal") has them
    assert shared_tagger().tag([("it", "was", "fun")])[0] == ["PRON", "VERB", "ADJ"]


def test_use_window_similarity_threshold():
    constraint = SentenceSimilarity(shared_encoder(), TEXTFOOLER_USE_THRESHOLD, "angular", 15, skip_short=False,
                                    compare_against_original=False)
    original, options = _swaps("the acting in this movie was wonderful and the story kept me interested until the "
                               "very end of it", 6, ["marvelous", "xylophone"])
    keep, scores = constraint.check(original, original, 6, options)
    assert keep.tolist() == [True, True] and scores[0] > scores[1] > TEXTFOOLER_USE_THRESHOLD  # one word of 15 changed
    cut = (scores[0] + scores[1]) / 2
    stricter = SentenceSimilarity(shared_encoder(), cut, "angular", 15, False, True)
    assert stricter.check(original, original, 6, options)[0].tolist() == [True, False]
    whole = SentenceSimilarity(shared_encoder(), 0.999, "cosine", None, False, True)
    assert whole.check(original, original, 6, options)[0].tolist() == [False, False]
    window = original.window(6, 15)
    assert len(window.split()) == 15 and window.startswith("the acting")
    skipping = SentenceSimilarity(shared_encoder(), 0.99, "angular", 15, skip_short=True,
                                  compare_against_original=True)
    short, short_options = _swaps("a wonderful movie", 1, ["xylophone"])
    assert skipping.check(short, short, 1, short_options)[0].tolist() == [True]  # fewer words than the window
    assert angular_similarity(np.array([1.0, 0.0, -1.0])).tolist() == [1.0, 0.5, 0.0]
    with pytest.raises(SubnetsError, match="metric"):
        SentenceSimilarity(shared_encoder(), 0.5, "euclid", None, False, True)


def test_windows_follow_replacements_and_fields():
    text = AttackText.from_fields(("a premise here", "one two three four five six")).replace(4, "TWO!")
    assert text.fields == ("a premise here", "one TWO! three four five six")
    assert text.window(5, 3) == "TWO! three four"  # positions count over both fields, windows in the current text
    assert text.window(0, 3) == "a premise here"
    assert text.window(8, 3) == "four five six"
    assert text.window(4, None) == "a premise here\none TWO! three four five six"
    assert text.window(3, 3) == "here\none TWO!"
