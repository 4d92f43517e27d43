"""The change-report oracle on hand-built cases, one rule of DESIGN.md "Safe to apply" each,
plus invariants over generated runs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.report_oracle import RunRecord, compute_report, json_equal
from tests.support.report_runs import run_records

HYPOTHESIS = settings(database=None, deadline=None, max_examples=200)
SCORE = "custom_analysis_data.score"


def call(summary: Any = "same", successful: Any = True, sentiment: Any = "Neutral",
         **custom: Any) -> dict[str, Any]:
    return {"call_summary": summary, "call_successful": successful,
            "user_sentiment": sentiment, "custom_analysis_data": custom}


def run(session_id: str, before: dict[str, Any] | None, after: dict[str, Any],
        **field_types: str) -> RunRecord:
    return RunRecord(session_id, before, after, field_types)


def report(*runs: RunRecord, kind: str = "call") -> dict[str, Any]:
    return compute_report("job-1", False, kind, runs)


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1.0, True),
    (True, 1, False),
    (False, 0, False),
    ("1", 1, False),
    (None, "", False),
    ("", "", True),
    ([1, {"a": 2}], [1.0, {"a": 2.0}], True),
    ([1, 2], [2, 1], False),
    ({"a": None}, {}, False),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
])
def test_json_equality(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


def test_absent_and_null_are_the_same_value() -> None:
    before = {"call_summary": "same", "custom_analysis_data": {"score": None}}
    after = {"call_summary": "same", "call_successful": None, "user_sentiment": None}
    result = report(run("s1", before, after, score="number"))
    assert result["sessions"] == {"analysed": 1, "changed": 0, "unchanged": 1, "without_before": 0}
    assert all(entry["changed"] == 0 for entry in result["fields"].values())
    # Listed (its key is in the before) though it has no value on either side.
    assert result["fields"][SCORE] == {"type": "number", "changed": 0, "before_present": 0,
                                       "after_present": 0, "before_mean": None,
                                       "after_mean": None}
    assert result["examples"] == []


def test_null_custom_data_is_no_custom_data() -> None:
    before = {**call(), "custom_analysis_data": None}
    after = {key: value for key, value in call().items() if key != "custom_analysis_data"}
    result = report(run("s1", before, after))
    assert list(result["fields"]) == ["call_summary", "call_successful", "user_sentiment"]
    assert result["sessions"]["changed"] == 0


def test_custom_data_that_is_not_an_object_has_no_fields() -> None:
    # A malformed import must not turn a list's indexes or a string into report fields.
    before = {**call(), "custom_analysis_data": ["a", "b"]}
    result = report(run("s1", before, {**call(), "custom_analysis_data": "text"}))
    assert list(result["fields"]) == ["call_summary", "call_successful", "user_sentiment"]


def test_a_field_only_in_befores_is_reported_with_its_inferred_type() -> None:
    runs = [
        run("s1", call(old_note="kept", old_flag=True), call(score=1), score="number"),
        run("s2", call(old_note=None, old_flag=False), call(score=2), score="number"),
    ]
    fields = report(*runs)["fields"]
    assert fields["custom_analysis_data.old_note"] == {
        "type": "string", "changed": 1, "before_present": 1, "after_present": 0}
    assert fields["custom_analysis_data.old_flag"] == {
        "type": "boolean", "changed": 2, "before_present": 2, "after_present": 0,
        "matrix": {"false": {"null": 1}, "true": {"null": 1}}}
    assert fields[SCORE]["before_present"] == 0
    assert fields[SCORE]["after_present"] == 2


@pytest.mark.parametrize(("values", "expected"), [
    ([1, 2.5], "number"),
    ([True, None], "boolean"),
    ([True, 1], "string"),
    (["a", 1], "string"),
    ([None, None], "string"),
])
def test_inferred_type_of_an_unrecorded_field(values: list[Any], expected: str) -> None:
    runs = [run(f"s{i}", call(old=value), call()) for i, value in enumerate(values)]
    assert report(*runs)["fields"]["custom_analysis_data.old"]["type"] == expected


def test_recorded_type_wins_over_values_and_the_majority_decides() -> None:
    runs = [
        run("s1", call(), call(mood="1"), mood="enum"),
        run("s2", call(), call(mood="2"), mood="enum"),
        run("s3", call(), call(mood="3"), mood="string"),
        run("s4", call(), call(flag=True), flag="string"),
        run("s5", call(), call(flag=False), flag="boolean"),
    ]
    fields = report(*runs)["fields"]
    assert fields["custom_analysis_data.mood"]["type"] == "enum"
    # A tie between recorded types goes to the first type name.
    assert fields["custom_analysis_data.flag"]["type"] == "boolean"


def test_boolean_matrix_keys() -> None:
    runs = [
        run("s1", call(successful=True), call(successful=False)),
        run("s2", call(successful=True), call(successful=True)),
        run("s3", call(successful=None), call(successful=True)),
        run("s4", call(successful=False), {"call_summary": "same", "user_sentiment": "Neutral"}),
    ]
    entry = report(*runs)["fields"]["call_successful"]
    assert entry == {
        "type": "boolean", "changed": 3, "before_present": 3, "after_present": 3,
        "matrix": {"false": {"null": 1}, "null": {"true": 1}, "true": {"false": 1, "true": 1}},
    }


def test_enum_matrix_keys_and_custom_enum() -> None:
    runs = [
        run("s1", call(sentiment="Positive", intent="buy"), call(sentiment="Negative",
                                                               intent="buy"), intent="enum"),
        run("s2", call(sentiment="Positive"), call(sentiment="Positive", intent="true"),
            intent="enum"),
        run("s3", call(sentiment=None, intent=1), call(sentiment="Unknown", intent=None),
            intent="enum"),
    ]
    fields = report(*runs)["fields"]
    assert fields["user_sentiment"]["type"] == "enum"
    assert fields["user_sentiment"]["matrix"] == {
        "Positive": {"Negative": 1, "Positive": 1}, "null": {"Unknown": 1}}
    # The string "true" is an enum value; the number 1 (an older configuration) is JSON text.
    assert fields["custom_analysis_data.intent"]["matrix"] == {
        "buy": {"buy": 1}, "null": {"true": 1}, "1": {"null": 1}}
    assert "before_mean" not in fields["custom_analysis_data.intent"]


def test_string_fields_have_no_matrix_or_means() -> None:
    entry = report(run("s1", call(summary="a"), call(summary="b")))["fields"]["call_summary"]
    assert entry == {"type": "string", "changed": 1, "before_present": 1, "after_present": 1}


def test_number_means_skip_nulls_and_are_floats() -> None:
    runs = [
        run("s1", call(score=1), call(score=1.0), score="number"),
        run("s2", call(score=None), call(score=3), score="number"),
        run("s3", call(score=2), call(score=None), score="number"),
        run("s4", call(), call(score=4), score="number"),
        run("s5", call(score="high"), call(score=4), score="number"),
    ]
    entry = report(*runs)["fields"][SCORE]
    assert entry["changed"] == 4  # s1: 1 and 1.0 are the same JSON number
    assert entry["before_present"] == 3
    assert entry["after_present"] == 4
    # The string of an older configuration is present but has no mean.
    assert entry["before_mean"] == 1.5
    assert entry["after_mean"] == pytest.approx(12 / 4)
    assert isinstance(entry["after_mean"], float)
    assert "matrix" not in entry


def test_booleans_are_not_numbers() -> None:
    runs = [run("s1", call(score=True), call(score=1), score="number")]
    entry = report(*runs)["fields"][SCORE]
    assert entry["changed"] == 1
    assert entry["before_mean"] is None
    assert entry["after_mean"] == 1.0


def test_runs_without_a_before_are_counted_apart() -> None:
    runs = [
        run("s1", None, call(summary="new", extra="x"), extra="string"),
        run("s2", call(summary="old"), call(summary="new")),
        run("s3", call(), call()),
        run("s4", {}, call()),
    ]
    result = report(*runs)
    assert result["sessions"] == {"analysed": 4, "changed": 2, "unchanged": 1, "without_before": 1}
    assert "custom_analysis_data.extra" not in result["fields"]
    summary = result["fields"]["call_summary"]
    assert (summary["changed"], summary["before_present"], summary["after_present"]) == (2, 2, 3)
    assert {example["session_id"] for example in result["examples"]} == {"s2", "s4"}


def test_examples_are_capped_at_five_and_ordered() -> None:
    ids = ["s07", "s03", "s01", "s06", "s02", "s05", "s04"]
    runs = [run(i, call(summary=i, successful=True, zeta=1),
                call(summary=i + "!", successful=False, zeta=2), zeta="number") for i in ids]
    runs.append(run("s00", call(sentiment="Positive"), call(sentiment="Negative")))
    examples = report(*runs)["examples"]
    keys = [(example["field"], example["session_id"]) for example in examples]
    first_five = ["s01", "s02", "s03", "s04", "s05"]
    assert keys == (
        [("call_successful", i) for i in first_five]
        + [("call_summary", i) for i in first_five]
        + [("custom_analysis_data.zeta", i) for i in first_five]
        + [("user_sentiment", "s00")]
    )
    assert examples[5] == {"session_id": "s01", "field": "call_summary",
                           "before": "s01", "after": "s01!"}


def test_example_of_an_absent_value_is_null() -> None:
    runs = [run("s1", call(gone="x"), call())]
    assert report(*runs)["examples"] == [
        {"session_id": "s1", "field": "custom_analysis_data.gone", "before": "x", "after": None}]


def test_field_order_and_chat_names() -> None:
    runs = [run("s1", {"chat_summary": "a", "custom_analysis_data": {"b": 1, "Z": 1}},
                {"chat_summary": "b", "custom_analysis_data": {"a": 1}})]
    result = compute_report("job-9", True, "chat", runs)
    assert list(result["fields"]) == [
        "chat_summary", "chat_successful", "user_sentiment",
        "custom_analysis_data.Z", "custom_analysis_data.a", "custom_analysis_data.b"]
    assert (result["job_id"], result["trial"]) == ("job-9", True)
    assert result["examples"][0]["field"] == "chat_summary"


def test_no_runs() -> None:
    result = report()
    assert result["sessions"] == {"analysed": 0, "changed": 0, "unchanged": 0, "without_before": 0}
    assert result["fields"]["call_successful"] == {
        "type": "boolean", "changed": 0, "before_present": 0, "after_present": 0, "matrix": {}}
    assert result["examples"] == []


def test_a_session_with_two_runs_is_refused() -> None:
    with pytest.raises(ValueError, match="s1"):
        report(run("s1", call(), call()), run("s1", call(), call()))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        compute_report("job-1", False, "email", [])


@HYPOTHESIS
@given(kind=st.sampled_from(["call", "chat"]), data=st.data())
def test_invariants(kind: str, data: st.DataObject) -> None:
    runs = data.draw(run_records(kind))
    result = compute_report("job-1", False, kind, runs)
    sessions = result["sessions"]
    compared = sessions["analysed"] - sessions["without_before"]
    assert sessions["analysed"] == len(runs)
    assert sessions["changed"] + sessions["unchanged"] == compared
    assert json.loads(json.dumps(result)) == result
    for name, entry in result["fields"].items():
        assert entry["changed"] <= sessions["changed"]
        assert max(entry["before_present"], entry["after_present"]) <= compared
        if "matrix" in entry:
            assert sum(sum(row.values()) for row in entry["matrix"].values()) == compared
        shown = [example for example in result["examples"] if example["field"] == name]
        assert len(shown) == min(5, entry["changed"])
    assert any(entry["changed"] for entry in result["fields"].values()) == bool(
        sessions["changed"])
