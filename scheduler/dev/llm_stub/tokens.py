"""The stand-in's tokenizer: a fixed, deterministic rule, so counts are reproducible.

The rule, in two steps:

1. **Pre-tokens** (a regular expression, first match wins): an English contraction (``'s``
   ``'t`` ``'re`` ``'ve`` ``'m`` ``'ll`` ``'d``); a word of Latin letters with its leading
   space; digits, in groups of up to three; a run of ASCII/Latin-1 punctuation and symbols
   with its leading space; a run of whitespace (a run that ends in a space before a
   non-space leaves that space to what follows); any other character (other scripts, emoji)
   on its own.
2. **Sub-words**: a word of up to 7 letters is one token. A longer word is cut into
   syllable-ish pieces: between two vowel groups (vowels ``aeiouy``, accents ignored) the cut
   goes before the consonant when there is one, else before the last consonant
   (``con|ver|sa|tion``, ``ap|point|ment``); a syllable of more than 7 letters is cut every 4
   letters; then syllables are joined left to right while a piece stays within 7 letters
   (``conver|sation``, ``appoint|ment``). The leading space stays on the first piece.

The tokens concatenate back to the text exactly. No ratio is involved, but typical English
prose lands near 4 characters per token and JSON near 3 (its quotes, colons and braces are
tokens of their own).
"""

from __future__ import annotations

import re
import unicodedata

MAX_PIECE_LETTERS = 7
LONG_SYLLABLE_CHUNK = 4
VOWELS = frozenset("aeiouy")

_LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
_PUNCTUATION = "!-/:-@\\[-`{-~\u00a1-\u00bf\u00d7\u00f7"
_PRE_TOKEN = re.compile(
    f"(?P<contraction>'(?i:s|t|re|ve|m|ll|d)(?![{_LATIN_LETTERS}]))"
    f"|(?P<word> ?[{_LATIN_LETTERS}]+)"
    "|[0-9]{1,3}"
    f"| ?[{_PUNCTUATION}]+"
    r"|\s+(?= \S)|\s+"
    "|.",
    re.DOTALL,
)
_VOWEL_GROUP = re.compile("v+")


def tokenize(text: str) -> list[str]:
    """The tokens of ``text``, in order; ``"".join(tokenize(text)) == text``."""
    tokens: list[str] = []
    for match in _PRE_TOKEN.finditer(text):
        if match.lastgroup == "word":
            tokens.extend(word_pieces(match.group()))
        else:
            tokens.append(match.group())
    return tokens


def count_tokens(text: str) -> int:
    return len(tokenize(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest run of whole tokens from the start of ``text`` that fits ``limit``."""
    return "".join(tokenize(text)[: max(limit, 0)])


def word_pieces(word: str) -> list[str]:
    """A word (optionally with its leading space) as sub-word tokens (step 2 of the rule)."""
    space, letters = (" ", word[1:]) if word.startswith(" ") else ("", word)
    if len(letters) <= MAX_PIECE_LETTERS:
        return [word]
    pieces = _join_syllables(_syllables(letters))
    pieces[0] = space + pieces[0]
    return pieces


def _is_vowel(letter: str) -> bool:
    # NFD puts the base letter first: é, ü and å count as the vowels they carry.
    return unicodedata.normalize("NFD", letter)[0].lower() in VOWELS


def _syllables(letters: str) -> list[str]:
    skeleton = "".join("v" if _is_vowel(letter) else "c" for letter in letters)
    groups = [match.span() for match in _VOWEL_GROUP.finditer(skeleton)]
    cuts = [end if start - end == 1 else start - 1
            for (_, end), (start, _) in zip(groups, groups[1:], strict=False)]
    bounds = [0, *cuts, len(letters)]
    syllables: list[str] = []
    for low, high in zip(bounds, bounds[1:], strict=False):
        syllables.extend(_chunks(letters[low:high]))
    return syllables


def _chunks(syllable: str) -> list[str]:
    """An over-long syllable (a code, a run of consonants) in fixed-size chunks."""
    if len(syllable) <= MAX_PIECE_LETTERS:
        return [syllable]
    step = LONG_SYLLABLE_CHUNK
    return [syllable[start : start + step] for start in range(0, len(syllable), step)]


def _join_syllables(syllables: list[str]) -> list[str]:
    pieces: list[str] = []
    for syllable in syllables:
        if pieces and len(pieces[-1]) + len(syllable) <= MAX_PIECE_LETTERS:
            pieces[-1] += syllable
        else:
            pieces.append(syllable)
    return pieces
