"""The WordNet reader on a tiny synthetic dict directory written here, and on the real one when installed."""

from pathlib import Path

import pytest

from subnets.attacks import build_attack
from subnets.attacks.wordnet import DEFAULT_WORDNET_DIR, WordNet
from subnets.errors import SubnetsError

LICENSE = "  1 This software and database is being provided to you, the LICENSEE\n"


def _write_pos(folder: Path, name: str, pos: str, synsets: list[list[str]], pointers: dict[str, str] = {}) -> None:
    """data.<name> with byte offsets as the synset ids, and the matching index.<name>."""
    data, offsets = LICENSE, []
    for words in synsets:
        offsets.append(len(data.encode()))
        members = " ".join(f"{w} 0" for w in words)
        data += f"{offsets[-1]:08d} 03 {pos} {len(words):02x} {members} 000 | a gloss\n"
    (folder / f"data.{name}").write_text(data)
    lemmas: dict[str, list[int]] = {}
    for offset, words in zip(offsets, synsets):
        for w in words:
            lemmas.setdefault(w.split("(")[0].lower(), []).append(offset)
    lines = [LICENSE]
    for lemma, offs in sorted(lemmas.items()):
        symbols = pointers.get(lemma, "")
        count = len(symbols.split())
        lines.append(f"{lemma} {pos} {len(offs)} {count} {symbols}{' ' if symbols else ''}{len(offs)} 0 "
                     + " ".join(f"{o:08d}" for o in offs) + "\n")
    (folder / f"index.{name}").write_text("".join(lines))


@pytest.fixture
def wordnet_dir(tmp_path):
    _write_pos(tmp_path, "noun", "n", [["film", "movie", "picture", "moving_picture"], ["goose", "Anser"],
                                       ["movie", "flick"]], pointers={"movie": "@ ~"})
    _write_pos(tmp_path, "verb", "v", [["run", "operate"], ["film", "shoot"]])
    _write_pos(tmp_path, "adj", "a", [["good(a)", "nice(p)"], ["quick", "speedy"]])
    _write_pos(tmp_path, "adv", "r", [])
    (tmp_path / "noun.exc").write_text("geese goose\n")
    (tmp_path / "verb.exc").write_text("ran run\n")
    return tmp_path


def test_synthetic_dictionary(wordnet_dir):
    wn = WordNet(wordnet_dir)
    # Both synsets of "movie", sense order, multi-word lemmas and the word itself left out.
    assert wn.synonyms("movie") == ("film", "picture", "flick")
    assert wn.synonyms("movies") == ("film", "movie", "picture", "flick")  # noun rule -s
    assert wn.synonyms("film") == ("movie", "picture", "shoot")  # noun and verb senses
    assert wn.synonyms("geese") == ("goose", "anser")  # exception list
    assert wn.synonyms("operating") == ("run", "operate")  # verb rule -ing -> -e
    assert wn.synonyms("ran") == ("run", "operate")
    assert wn.synonyms("good") == ("nice",)  # adjective markers stripped
    assert wn.synonyms("quicker") == ("quick", "speedy")
    assert wn.synonyms("unknownword") == ()
    assert wn.base_forms("Movies", "n") == ["movie"]
    wn.close()


def test_missing_or_broken_directory(tmp_path, wordnet_dir):
    with pytest.raises(SubnetsError, match="wordnet-base"):
        WordNet(tmp_path / "nowhere")
    data = wordnet_dir / "data.noun"
    first = f"{len(LICENSE.encode()):08d} 03"
    data.write_text(data.read_text().replace(first, "00000999 03"))
    with pytest.raises(SubnetsError, match="no synset at byte"):
        WordNet(wordnet_dir).synonyms("film")


def test_pwws_uses_the_given_wordnet(wordnet_dir):
    class PreferFlick:
        def predict_proba(self, inputs):
            import numpy as np

            return np.array([[0.9, 0.1] if "flick" in x[-1] else [0.2, 0.8] for x in inputs])

    result = build_attack("pwws", PreferFlick(), wordnet_dir=wordnet_dir, max_ratio=0.5).attack(("a fine movie",), label=1)
    assert result.status == "successful" and result.perturbed == ("a fine flick",)


@pytest.mark.skipif(not (Path(DEFAULT_WORDNET_DIR) / "data.noun").is_file(),
                    reason="WordNet 3.0 (apt-get install wordnet-base) is not installed")
def test_real_wordnet():
    wn = WordNet()
    assert {"rapidly", "speedily"} <= set(wn.synonyms("quickly"))
    assert {"film", "picture", "flick"} <= set(wn.synonyms("movie"))
    assert wn.base_forms("geese", "n") == ["goose"]
    assert wn.base_forms("running", "v") == ["run"]
    assert all("_" not in s for s in wn.synonyms("good"))
