"""Reading a transcript: who said what, its words with their stems and numbers, and cues.

Pure functions of the text, so every answer stays a function of (transcript, schema).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from scheduler.dev.llm_stub.content import messages_text

USER_ROLES = frozenset({"user", "customer", "caller", "human", "client", "visitor"})
# Small numbers are often said in words ("a table for two").
NUMBER_WORDS: dict[str, int] = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
# Words that carry no topic: function words, and words every call's description uses.
STOP_WORDS = frozenset({
    "the", "and", "for", "with", "from", "that", "this", "these", "those", "any", "some",
    "all", "how", "many", "much", "what", "when", "where", "which", "who", "whom", "why",
    "whether", "not", "are", "was", "were", "been", "being", "its", "has", "have", "had",
    "can", "could", "would", "should", "will", "may", "might", "must", "there", "their",
    "they", "them", "you", "your", "our", "his", "her", "she", "him", "into", "onto", "about",
    "than", "then", "also", "only", "each", "per", "call", "caller", "user", "agent", "chat",
    "conversation", "transcript", "session", "field", "value", "given",
})
SUFFIXES = ("ing", "ed", "e")
MIN_STEM_LETTERS = 3

_TRANSCRIPT_SECTION = re.compile(r"<transcript>(.*?)</transcript>", re.DOTALL)
# Not indented: the product indents a turn's continuation lines, so they cannot forge a turn.
_ROLE_PREFIX = re.compile(r"^([A-Za-z][\w-]{0,30})\s*:\s*(.*)$")
_WORD = re.compile(
    r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|[^\W\d_]+(?:'[^\W\d_]+)?")
_NAME_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_DOUBLED_CONSONANT = re.compile(r"([^aeiou])\1$")


def transcript_of(messages: Iterable[object]) -> str:
    """The user text, narrowed to its ``<transcript>`` sections when it has any."""
    text = messages_text(messages, frozenset({"user"}))
    sections = _TRANSCRIPT_SECTION.findall(text)
    return "\n".join(section.strip() for section in sections) if sections else text


def stem(word: str) -> str:
    """A word without inflection, so ``bookings``, ``booked`` and ``book`` meet: lower case;
    a plural ``s`` cut (not ``ss``), then the first of ing/ed/e; each cut only if 3 letters
    remain; then a final doubled consonant halved."""
    word = word.lower().removesuffix("'s")
    if word.endswith("s") and not word.endswith("ss") and len(word) > MIN_STEM_LETTERS:
        word = word[:-1]
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= MIN_STEM_LETTERS:
            word = word[: -len(suffix)]
            break
    return _DOUBLED_CONSONANT.sub(r"\1", word)


_STOP_STEMS = frozenset(stem(word) for word in STOP_WORDS)


def keywords(*texts: str) -> frozenset[str]:
    """The stems of the topic words of field names and descriptions (``appointment_count``,
    ``"How many appointments…"`` → ``appointment``, ``count``): words of 3 letters or more,
    stop words left out."""
    words = [part for text in texts for part in _NAME_PART.findall(text)]
    stems = {stem(word) for word in words if len(word) >= MIN_STEM_LETTERS}
    return frozenset(stems - _STOP_STEMS)


def choice_stems(choice: str) -> frozenset[str]:
    """The stems of an enum choice's words (``plan_change`` → ``plan``, ``chang``); a choice
    is never a stop word, however short."""
    return frozenset(stem(word) for word in _NAME_PART.findall(choice))


@dataclass(frozen=True)
class Word:
    """One word (or number) of the transcript, with where it was said."""

    text: str
    stem: str
    turn: int
    by_user: bool
    position: int
    number: int | float | None


@dataclass(frozen=True)
class Turn:
    role: str
    text: str

    @property
    def by_user(self) -> bool:
        return self.role in USER_ROLES


class Reading:
    """A transcript read once: its turns (``role: text`` lines; an indented or unprefixed
    line continues the turn before it) and its words in order."""

    def __init__(self, transcript: str) -> None:
        self.transcript = transcript
        self.turns = _turns(transcript)

    @cached_property
    def words(self) -> list[Word]:
        found: list[Word] = []
        for index, turn in enumerate(self.turns):
            for match in _WORD.finditer(turn.text):
                text = match.group().lower()
                found.append(Word(text, stem(text), index, turn.by_user, len(found),
                                  _number(text)))
        return found

    def first_user_line(self) -> str:
        """The first turn spoken by the user, role prefix stripped; else the first turn."""
        for turn in self.turns:
            if turn.by_user and turn.text:
                return turn.text
        return next((turn.text for turn in self.turns if turn.text), "")

    def user_words(self) -> list[Word]:
        return [word for word in self.words if word.by_user]

    def turn_words(self, turn: int) -> list[Word]:
        return [word for word in self.words if word.turn == turn]

    def mentions(self, turn: int, stems: frozenset[str]) -> bool:
        return any(word.stem in stems for word in self.turn_words(turn))


def _turns(transcript: str) -> list[Turn]:
    turns: list[Turn] = []
    for line in transcript.splitlines():
        match = _ROLE_PREFIX.match(line)
        if match:
            turns.append(Turn(match.group(1).lower(), match.group(2).strip()))
        elif line.strip() and turns:
            last = turns[-1]
            turns[-1] = Turn(last.role, f"{last.text} {line.strip()}".strip())
        elif line.strip():
            turns.append(Turn("", line.strip()))
    return turns


def _number(text: str) -> int | float | None:
    if text in NUMBER_WORDS:
        return NUMBER_WORDS[text]
    if not "0" <= text[:1] <= "9":
        return None
    digits = text.replace(",", "")
    return float(digits) if "." in digits else int(digits)


def count_cues(words: Sequence[Word], cues: Iterable[tuple[str, ...]]) -> int:
    """How many times the cue phrases (tuples of lower-case words) occur in ``words``."""
    texts = [word.text for word in words]
    return sum(texts[start : start + len(cue)] == list(cue)
               for cue in cues for start in range(len(texts)))
