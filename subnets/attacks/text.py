"""An input (one or more text fields) seen as a sequence of words that can be replaced one position at a time.

Words are found as TextAttack's `words_from_text` finds them (runs of word characters, with inner apostrophes,
hyphens, asterisks and at signs kept: "n't", "half-hearted") and kept as character spans of the original strings,
so a perturbed text differs from the original only at the replaced words (punctuation and spacing are untouched).
Positions count over all fields, in order, so "perturbed words / words" uses TextAttack's denominator (every word
of the input, premise included), and text windows (`window`) run over the fields joined by a newline, as
TextAttack's `AttackedText.text` joins its columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

WORD_PATTERN = re.compile(r"\w+(?:['\-*@]\w+)*")
_SPACE_RUNS = re.compile(r"  +")
FIELD_SEPARATOR = "\n"


@dataclass(frozen=True)
class Word:
    field: int
    start: int
    end: int
    text: str


def split_words(fields: tuple[str, ...]) -> tuple[Word, ...]:
    return tuple(Word(f, m.start(), m.end(), m.group()) for f, text in enumerate(fields)
                 for m in WORD_PATTERN.finditer(text))


def match_case(original: str, replacement: str) -> str:
    """Give `replacement` the capitalisation pattern of `original` (all caps, capitalised, or as is)."""
    if original.isupper() and len(original) > 1:
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def window_bounds(index: int, length: int, size: int) -> tuple[int, int]:
    """First and last word of the `size`-word window around `index` (TextAttack's text_window_around_index)."""
    half = (size - 1) / 2.0
    if index - half < 0:
        return 0, min(size - 1, length - 1)
    if index + half >= length:
        return max(0, length - size), length - 1
    return index - math.ceil(half), index + math.floor(half)


@dataclass(frozen=True)
class AttackText:
    """Original fields plus replacements by word position ("" deletes the word)."""

    original: tuple[str, ...]
    words: tuple[Word, ...]
    replacements: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: tuple[str, ...]) -> AttackText:
        return cls(tuple(fields), split_words(tuple(fields)))

    def replace(self, position: int, new: str) -> AttackText:
        return AttackText(self.original, self.words, {**self.replacements, position: new})

    def word(self, position: int) -> str:
        """The current word at `position` (its replacement, if any)."""
        return self.replacements.get(position, self.words[position].text)

    @property
    def current_words(self) -> list[str]:
        return [self.word(p) for p in range(len(self.words))]

    @property
    def perturbed_positions(self) -> list[int]:
        """Positions whose word differs from the original (a replacement equal to the original does not count)."""
        return sorted(p for p, new in self.replacements.items() if new != self.words[p].text)

    def _render(self) -> tuple[tuple[str, ...], dict[int, tuple[int, int]]]:
        """The fields, and each replaced position's (start, end) in its rendered field (before space clean-up)."""
        pieces: list[list[str]] = [[] for _ in self.original]
        lengths = [0] * len(self.original)
        cursors = [0] * len(self.original)
        spans: dict[int, tuple[int, int]] = {}
        for position in sorted(self.replacements):
            word, new = self.words[position], self.replacements[position]
            f = word.field
            before = self.original[f][cursors[f]:word.start]
            pieces[f] += [before, new]
            spans[position] = (lengths[f] + len(before), lengths[f] + len(before) + len(new))
            lengths[f] += len(before) + len(new)
            cursors[f] = word.end
        rendered = tuple("".join(pieces[f]) + text[cursors[f]:] for f, text in enumerate(self.original))
        return rendered, spans

    @property
    def fields(self) -> tuple[str, ...]:
        rendered, _ = self._render()
        deleted = {self.words[p].field for p, new in self.replacements.items() if not new}
        return tuple(_SPACE_RUNS.sub(" ", text).strip() if f in deleted else text for f, text in enumerate(rendered))

    @property
    def text(self) -> str:
        """All fields joined by a newline (TextAttack's `AttackedText.text`)."""
        return FIELD_SEPARATOR.join(self.fields)

    def window(self, index: int, size: int | None) -> str:
        """The text of the `size`-word window around word `index` (the whole text for `size=None`).

        Only for swaps (no deleted word), where positions of this text and the original coincide.
        """
        if size is None:
            return self.text
        rendered, spans = self._render()
        first, last = window_bounds(index, len(self.words), size)
        offsets = [0]
        for text in rendered[:-1]:
            offsets.append(offsets[-1] + len(text) + len(FIELD_SEPARATOR))

        def char_span(p: int) -> tuple[int, int]:
            start, end = spans.get(p, (self.words[p].start, self.words[p].end))
            if p not in spans:  # an untouched word: shift its original offset by earlier replacements' length change
                shift = sum(len(self.replacements[q]) - (self.words[q].end - self.words[q].start)
                            for q in self.replacements if q < p and self.words[q].field == self.words[p].field)
                start, end = start + shift, end + shift
            return offsets[self.words[p].field] + start, offsets[self.words[p].field] + end

        return FIELD_SEPARATOR.join(rendered)[char_span(first)[0]:char_span(last)[1]]
