"""The stand-in's tokenizer: a fixed rule, so the counts below are known exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.dev.llm_stub.tokens import count_tokens, tokenize, truncate_to_tokens, word_pieces

PROSE = (
    "When a customer edits the prompts of their voice agent, they usually want to know how "
    "the new instructions would have changed the analysis of their past calls. Operators can "
    "pause the job, resume it later, or cancel it entirely if something looks wrong. Every "
    "result is recorded with the model, the agent version and the configuration that "
    "produced it, so nothing is lost when a later run replaces it."
)


@pytest.mark.parametrize(("text", "tokens"), [
    ("Hello, world!", ["Hello", ",", " world", "!"]),
    ("I'd like 2025 apples.", ["I", "'d", " like", " ", "202", "5", " apples", "."]),
    ('{"a": 1}', ['{"', "a", '":', " ", "1", "}"]),
    ("a  b\n\nc", ["a", " ", " b", "\n\n", "c"]),
    ("東京 😀", ["東", "京", " ", "😀"]),
    ("café crème", ["café", " crème"]),
    ("", []),
])
def test_pre_tokens(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


@pytest.mark.parametrize(("word", "pieces"), [
    ("booking", ["booking"]),  # 7 letters: one token
    ("conversation", ["conver", "sation"]),  # con|ver|sa|tion, joined within 7 letters
    (" appointment", [" appoint", "ment"]),  # the leading space stays on the first piece
    ("instructions", ["instruc", "tions"]),
    ("bcdfghjklmnp", ["bcdf", "ghjk", "lmnp"]),  # no vowel: one long syllable, 4 letters a piece
])
def test_long_words_split_into_syllable_ish_pieces(word: str, pieces: list[str]) -> None:
    assert word_pieces(word) == pieces
    assert count_tokens(word) == len(pieces)


def test_english_prose_is_near_four_characters_a_token() -> None:
    assert count_tokens(PROSE) == 88
    assert 3.5 <= len(PROSE) / count_tokens(PROSE) <= 5.0


def test_json_is_denser_than_prose() -> None:
    document = json.dumps({"call_summary": "Booked a cleaning", "call_successful": True,
                           "user_sentiment": "Positive", "party_size": 2,
                           "custom_analysis_data": {"intent": "booking", "callback": None}})
    prose_ratio = len(PROSE) / count_tokens(PROSE)
    json_ratio = len(document) / count_tokens(document)
    assert json_ratio < 0.8 * prose_ratio


def test_more_of_the_same_text_is_more_tokens() -> None:
    counts = [count_tokens(PROSE * n) for n in range(1, 5)]
    assert counts == sorted(set(counts))
    assert counts[3] >= 4 * counts[0] - 3  # only the joins between copies may differ


@given(st.text(), st.text())
def test_tokens_are_lossless_and_appending_never_lowers_the_count(head: str, tail: str) -> None:
    assert "".join(tokenize(head + tail)) == head + tail
    assert count_tokens(head + tail) >= count_tokens(head)


def test_truncate_keeps_whole_tokens_from_the_start() -> None:
    assert truncate_to_tokens("Hello, world!", 3) == "Hello, world"
    assert truncate_to_tokens("Hello, world!", 99) == "Hello, world!"
    assert truncate_to_tokens("Hello, world!", 0) == ""
    assert count_tokens(truncate_to_tokens(PROSE, 10)) == 10
