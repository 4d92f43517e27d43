"""The stand-in's answers: plausible values read from the transcript, deterministic, and
always valid for the schema (the rules are in the package doc)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.dev.llm_stub.answers import derive
from scheduler.dev.llm_stub.transcript import keywords, stem

INTENTS = ["booking", "billing", "plan_change", "other"]
SENTIMENTS = ["Positive", "Negative", "Neutral", "Unknown"]


def custom(kind: dict[str, Any], description: str) -> dict[str, Any]:
    """A custom field as the product's output schema writes it: nullable, described."""
    return {"anyOf": [kind, {"type": "null"}], "description": description}


FIELDS: dict[str, Any] = {
    "intent": custom({"type": "string", "enum": INTENTS}, "Why the caller called."),
    "appointment_count": custom({"type": "number"}, "How many appointments the caller booked."),
    "party_size": custom({"type": "integer", "minimum": 1, "maximum": 8},
                         "How many people the booking is for, if any."),
    "is_new_customer": custom({"type": "boolean"}, "Whether the caller is a new customer."),
    "callback_time": custom({"type": "string"}, "When the caller asked to be called back."),
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "successful": {"type": "boolean"},
        "user_sentiment": {"type": "string", "enum": SENTIMENTS},
        "custom_analysis_data": {"type": "object", "properties": FIELDS,
                                 "required": list(FIELDS), "additionalProperties": False},
    },
    "required": ["summary", "successful", "user_sentiment", "custom_analysis_data"],
    "additionalProperties": False,
}


def answer(transcript: str) -> dict[str, Any]:
    value: dict[str, Any] = derive(SCHEMA, transcript)
    return value


def field(transcript: str, name: str) -> Any:
    return answer(transcript)["custom_analysis_data"][name]


def by_hash(transcript: str, name: str) -> int:
    return int(hashlib.sha256((transcript + name).encode()).hexdigest(), 16)


@pytest.mark.parametrize(("word", "expected"), [
    ("booked", "book"), ("booking", "book"), ("Bookings", "book"), ("appointments", "appointment"),
    ("invoice", "invoic"), ("invoices", "invoic"), ("cancelled", "cancel"), ("call", "cal"),
    ("called", "cal"), ("yes", "yes"), ("plans", "plan"),
])
def test_stems_bring_inflections_together(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_field_words_come_from_the_name_and_the_description() -> None:
    assert keywords("appointment_count", "How many appointments the caller booked.") == {
        "appointment", "count", "book"}
    assert keywords("isNewCustomer", "") == {"new", "customer"}


# --- enum ---


@pytest.mark.parametrize(("transcript", "intent"), [
    ("user: I booked a table last week", "booking"),  # by stem, not the literal choice
    ("agent: booking, booking or booking?\nuser: my billing please", "billing"),  # the user's
    ("user: billing, or maybe booking", "booking"),  # as often: the one the user said last
    ("user: booking, or maybe billing", "billing"),
    ("user: booking twice: booking. And billing.", "booking"),  # said most often
    ("user: I want to switch plans", "plan_change"),  # any word of a multi-word choice
])
def test_enum_is_the_choice_the_user_talks_about(transcript: str, intent: str) -> None:
    assert field(transcript, "intent") == intent


def test_enum_nobody_names_is_picked_by_hash() -> None:
    transcript = "user: I am rebooking my visit"  # "rebook" is not "book"
    assert field(transcript, "intent") == INTENTS[by_hash(transcript, "intent") % 4]


@pytest.mark.parametrize(("transcript", "sentiment"), [
    ("user: thanks, that was perfect", "Positive"),
    ("user: this is terrible, I am so frustrated", "Negative"),
    ("user: thanks, but honestly this is terrible and I am angry", "Negative"),
    ("user: I need to move my visit to Friday", "Neutral"),
    ("agent: thanks a lot, great, perfect!\nuser: ok fine then", "Neutral"),  # only the user's
    ("agent: Hello, are you there?\nuser: hello?", "Unknown"),  # almost nothing said
    ("", "Unknown"),
])
def test_user_sentiment_from_the_users_cue_words(transcript: str, sentiment: str) -> None:
    assert answer(transcript)["user_sentiment"] == sentiment


# --- number ---


@pytest.mark.parametrize(("transcript", "count"), [
    ("user: I called 2 times about my 3 appointments", 3),  # next to "appointments"
    ("user: 4 appointments, 7 days", 4),  # equally near: the earlier one
    ("user: I called 2 times about my 3 visits", 2),  # no field word: the first number
    ("user: a table for 12.5 people", 12.5),
    ("user: no numbers at all", None),
])
def test_number_is_the_one_next_to_the_fields_words(transcript: str, count: Any) -> None:
    expected = by_hash(transcript, "appointment_count") % 10 if count is None else count
    assert field(transcript, "appointment_count") == expected


@pytest.mark.parametrize(("transcript", "size"), [
    ("user: a cleaning for two people next Tuesday at 10", 2),  # said in words
    ("user: we are 20 people", 8),  # clamped to the maximum
    ("user: 0 people", 1),  # and to the minimum
    ("user: booking for 3.7 people", 3),  # an integer truncates
])
def test_integer_field_is_clamped_and_truncated(transcript: str, size: int) -> None:
    assert field(transcript, "party_size") == size


def test_the_description_alone_names_the_fields_words() -> None:
    schema = {"type": "object", "properties": {
        "x": custom({"type": "number"}, "The number of guests."),
        "y": custom({"type": "number"}, "The number of children."),
    }}
    assert derive(schema, "user: 2 children and 5 guests") == {"x": 5, "y": 2}


# --- boolean ---


@pytest.mark.parametrize(("transcript", "expected"), [
    ("agent: Are you a new customer?\nuser: Yes, first time here", True),  # answers the question
    ("agent: Are you a new customer?\nuser: No, I've been before", False),
    ("user: I'm not a new customer", False),
    ("user: I am a new customer, sure", True),
    ("agent: Are you a new customer?\nuser: I don't think so", False),  # n't is a no
])
def test_boolean_from_yes_and_no_about_the_field(transcript: str, expected: bool) -> None:
    assert field(transcript, "is_new_customer") is expected


def test_boolean_without_a_related_answer_is_hash_parity() -> None:
    transcript = "user: yes, yes, yes\nagent: Good. Anything about your bill?"
    assert field(transcript, "is_new_customer") is (by_hash(transcript, "is_new_customer")
                                                    % 2 == 0)


@pytest.mark.parametrize(("transcript", "expected"), [
    ("agent: You are booked for Tuesday.\nuser: Thank you!", True),
    ("user: I was charged twice\nagent: I've refunded it.\nuser: Great.", True),
    ("user: Cancel my appointment, I'm not interested any more", False),
    ("user: Wrong number, sorry.", False),
])
def test_successful_from_success_and_failure_cues(transcript: str, expected: bool) -> None:
    assert answer(transcript)["successful"] is expected


@pytest.mark.parametrize("transcript", [
    "user: I have a complaint. Thanks for nothing.",  # one cue each way
    "user: hello",
])
def test_successful_without_a_balance_is_hash_parity(transcript: str) -> None:
    assert answer(transcript)["successful"] is (by_hash(transcript, "successful") % 2 == 0)


# --- string ---


def test_summary_is_the_first_user_words_and_a_string_field_the_line_about_it() -> None:
    transcript = ("agent: Thanks for calling, how can I help?\n"
                  "user: Hi, I'd like to book a cleaning for two people next Tuesday, please.\n"
                  "agent: Done. Anything else?\n"
                  "user: Yes, call me back tomorrow at 9 about the bill")
    result = answer(transcript)
    assert result["summary"] == "Hi, I'd like to book a cleaning for two people next Tuesday,"
    assert result["custom_analysis_data"]["callback_time"] == (
        "callback_time: Yes, call me back tomorrow at")


def test_an_indented_line_continues_the_turn() -> None:
    transcript = "user: I am a\n  new customer: yes\nagent: welcome"
    assert answer(transcript)["summary"] == "I am a new customer: yes"
    assert field(transcript, "is_new_customer") is True


# --- always valid, always the same ---


def check_fits(result: dict[str, Any]) -> None:
    assert set(result) == set(SCHEMA["properties"])
    assert isinstance(result["summary"], str) and isinstance(result["successful"], bool)
    assert result["user_sentiment"] in SENTIMENTS
    data = result["custom_analysis_data"]
    assert set(data) == set(FIELDS)
    assert data["intent"] in INTENTS
    assert isinstance(data["appointment_count"], int | float)
    assert not isinstance(data["appointment_count"], bool)
    assert isinstance(data["party_size"], int) and 1 <= data["party_size"] <= 8
    assert isinstance(data["is_new_customer"], bool)
    assert isinstance(data["callback_time"], str)


@given(st.lists(st.tuples(st.sampled_from(["user", "agent", "caller", "  "]), st.text()),
                max_size=6))
def test_any_transcript_gets_a_valid_answer_and_the_same_one_twice(
    turns: list[tuple[str, str]],
) -> None:
    transcript = "\n".join(f"{role}: {text}" for role, text in turns)
    result = answer(transcript)
    check_fits(result)
    assert answer(transcript) == result
