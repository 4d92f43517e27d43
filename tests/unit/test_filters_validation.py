"""Filter rows: validation messages, and compilation to Postgres SQL without a database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import postgresql

from scheduler.jobs.filters import (
    FIELDS,
    FilterRow,
    compile_filters,
    matching_sessions,
    parse_filters,
)
from shared.errors import InvalidFilter, InvalidInput
from tests.support.filters_oracle import evaluate_filters, evaluate_row

GOOD = {"field": "duration_ms", "op": "gt", "value": 1000}

# Every field with every op it accepts, as a user would send them.
VALID_ROWS: dict[str, list[dict[str, Any]]] = {
    "agent": [{"field": "agent", "op": "in", "value": [
        {"agent_id": "a1"}, {"agent_id": "a2", "versions": [0, 3]}]}],
    "call_id": [{"field": "call_id", "op": "eq", "value": "c1"},
                {"field": "call_id", "op": "in", "value": ["c1", "c2"]}],
    "chat_id": [{"field": "chat_id", "op": "eq", "value": "c1"},
                {"field": "chat_id", "op": "in", "value": ["c1"]}],
    **{
        field: [{"field": field, "op": op, "value": "+1555"}
                for op in ("eq", "ne", "sw", "ew", "co")]
        + [{"field": field, "op": "pr"}, {"field": field, "op": "np", "value": None}]
        for field in ("batch_call_id", "from_number", "to_number")
    },
    "call_status": [{"field": "call_status", "op": "in", "value": ["ended", "not_connected"]},
                    {"field": "call_status", "op": "nin", "value": ["registered"]}],
    "chat_status": [{"field": "chat_status", "op": "in", "value": ["ongoing"]},
                    {"field": "chat_status", "op": "nin", "value": ["error"]}],
    "call_type": [{"field": "call_type", "op": "in", "value": ["web_call"]},
                  {"field": "call_type", "op": "nin", "value": ["phone_call"]}],
    "direction": [{"field": "direction", "op": "in", "value": ["inbound"]},
                  {"field": "direction", "op": "nin", "value": ["outbound"]}],
    "disconnection_reason": [
        {"field": "disconnection_reason", "op": "in", "value": ["user_hangup"]},
        {"field": "disconnection_reason", "op": "nin", "value": ["agent_hangup", "x"]}],
    "user_sentiment": [{"field": "user_sentiment", "op": "in", "value": ["Positive"]},
                       {"field": "user_sentiment", "op": "nin", "value": ["Unknown"]},
                       {"field": "user_sentiment", "op": "pr"},
                       {"field": "user_sentiment", "op": "np"}],
    **{
        field: [{"field": field, "op": "eq", "value": False}, {"field": field, "op": "pr"},
                {"field": field, "op": "np"}]
        for field in ("call_successful", "chat_successful", "in_voicemail")
    },
    **{
        field: [{"field": field, "op": op, "value": 1_700_000_000_000}
                for op in ("eq", "ne", "gt", "ge", "lt", "le")]
        + [{"field": field, "op": "bt", "value": [0, 0]}]
        for field in ("start_timestamp", "end_timestamp", "duration_ms")
    },
    "transfer_agent": [{"field": "transfer_agent", "op": "in", "value": ["a1", "a2"]}],
    **{
        field: [
            {"field": field, "key": "k", "op": "eq", "value": "s"},
            {"field": field, "key": "k", "op": "eq", "value": 1.5},
            {"field": field, "key": "k", "op": "eq", "value": True},
            {"field": field, "key": "k", "op": "ne", "value": "s"},
            {"field": field, "key": "k", "op": "ne", "value": 2},
            {"field": field, "key": "k", "op": "ne", "value": False},
            *({"field": field, "key": "k", "op": op, "value": "s"} for op in ("sw", "ew", "co")),
            *({"field": field, "key": "k", "op": op, "value": 3} for op in ("gt", "ge", "lt")),
            {"field": field, "key": "k", "op": "le", "value": -0.5},
            {"field": field, "key": "k", "op": "bt", "value": [1, 2.5]},
            {"field": field, "key": "k", "op": "pr"},
            {"field": field, "key": "k", "op": "np", "value": None},
        ]
        for field in ("custom_analysis_data", "metadata", "dynamic_variables")
    },
}

VALID_CASES = [
    (kind, raw) for field, raws in VALID_ROWS.items() for raw in raws
    for kind in sorted(FIELDS[field].kinds)
]


def refused(kind: str, rows: object) -> InvalidFilter:
    with pytest.raises(InvalidFilter) as caught:
        parse_filters(kind, rows)
    return caught.value


def assert_refused(rows: list[Any], index: int, word: str, kind: str = "call") -> None:
    error = refused(kind, rows)
    assert error.index == index
    assert str(error).startswith(f"filters[{index}]: ")
    assert word in str(error), str(error)


def test_every_field_has_valid_examples() -> None:
    assert set(VALID_ROWS) == set(FIELDS)
    covered = {(raw["field"], raw["op"]) for raws in VALID_ROWS.values() for raw in raws}
    assert covered == {(field, op) for field, spec in FIELDS.items() for op in spec.ops}


@pytest.mark.parametrize(("kind", "raw"), VALID_CASES)
def test_valid_rows_parse(kind: str, raw: dict[str, Any]) -> None:
    [row] = parse_filters(kind, [raw])
    assert (row.field, row.op, row.key) == (raw["field"], raw["op"], raw.get("key"))
    if raw["op"] not in ("pr", "np"):
        assert row.value == raw["value"]


def test_kind_must_be_call_or_chat() -> None:
    with pytest.raises(InvalidInput, match="kind"):
        parse_filters("voice", [])
    with pytest.raises(InvalidInput, match="kind"):
        compile_filters("sms", [])


def test_not_a_list() -> None:
    error = refused("call", {"field": "call_id"})
    assert error.index is None
    assert str(error).startswith("filters: ") and "array" in str(error)


def test_too_many_rows() -> None:
    error = refused("call", [GOOD] * 51)
    assert error.index is None and "too many" in str(error)
    assert len(parse_filters("call", [GOOD] * 50)) == 50
    with pytest.raises(InvalidFilter, match="too many"):
        parse_filters("call", [GOOD] * 3, max_rows=2)


def test_row_not_an_object() -> None:
    assert_refused([GOOD, ["duration_ms", "gt", 1]], 1, "object")


def test_unknown_row_key() -> None:
    assert_refused([GOOD, GOOD, {**GOOD, "negate": True}], 2, "unknown row key")


def test_unknown_field() -> None:
    assert_refused([{"field": "colour", "op": "eq", "value": "red"}], 0, "unknown field")
    assert_refused([GOOD, {"op": "eq", "value": "red"}], 1, "'field'")


@pytest.mark.parametrize(
    ("kind", "field", "op", "value"),
    [
        ("chat", "call_status", "in", ["ended"]),
        ("call", "chat_status", "in", ["ended"]),
        ("call", "chat_id", "eq", "x"),
        ("chat", "call_id", "eq", "x"),
        ("chat", "call_successful", "eq", True),
        ("call", "chat_successful", "eq", True),
        ("chat", "from_number", "eq", "x"),
        ("chat", "direction", "in", ["inbound"]),
    ],
)
def test_field_not_available_for_kind(kind: str, field: str, op: str, value: Any) -> None:
    assert_refused([GOOD, {"field": field, "op": op, "value": value}], 1, "not available", kind)


@pytest.mark.parametrize(
    ("field", "op"),
    [("call_status", "eq"), ("from_number", "in"), ("start_timestamp", "sw"),
     ("metadata", "in"), ("metadata", "nin"), ("agent", "eq"), ("call_successful", "ne"),
     ("duration_ms", "pr"), ("call_id", "ne"), ("transfer_agent", "nin")],
)
def test_op_not_allowed(field: str, op: str) -> None:
    raw = {"field": field, "op": op, "value": "x"}
    if FIELDS[field].keyed:
        raw["key"] = "k"
    assert_refused([raw], 0, "not allowed")
    assert_refused([{**GOOD, "op": None}], 0, "'op'")


@pytest.mark.parametrize(
    ("raw", "word"),
    [
        ({"field": "start_timestamp", "op": "gt", "value": True}, "integer, got boolean"),
        ({"field": "start_timestamp", "op": "gt", "value": "1700"}, "integer"),
        ({"field": "start_timestamp", "op": "gt", "value": 1.5}, "integer"),
        ({"field": "start_timestamp", "op": "gt", "value": 2**63}, "range"),
        ({"field": "from_number", "op": "eq", "value": 5}, "string"),
        ({"field": "from_number", "op": "eq", "value": ["a"]}, "string"),
        ({"field": "call_id", "op": "eq", "value": None}, "string, got null"),
        ({"field": "call_id", "op": "in", "value": "c1"}, "list"),
        ({"field": "call_id", "op": "in", "value": []}, "non-empty list"),
        ({"field": "call_id", "op": "in", "value": ["a", 1]}, "value[1]"),
        ({"field": "call_successful", "op": "eq", "value": 1}, "boolean"),
        ({"field": "call_successful", "op": "eq", "value": "true"}, "boolean"),
        ({"field": "transfer_agent", "op": "in", "value": [None]}, "string"),
        ({"field": "metadata", "key": "k", "op": "gt", "value": True}, "number"),
        ({"field": "metadata", "key": "k", "op": "gt", "value": "5"}, "number"),
        ({"field": "metadata", "key": "k", "op": "gt", "value": float("nan")}, "finite"),
        ({"field": "metadata", "key": "k", "op": "sw", "value": 5}, "string"),
        ({"field": "metadata", "key": "k", "op": "eq", "value": None}, "string, number or"),
        ({"field": "metadata", "key": "k", "op": "eq", "value": [1]}, "string, number or"),
        ({"field": "from_number", "op": "eq"}, "needs a value"),
    ],
)
def test_wrong_value_type(raw: dict[str, Any], word: str) -> None:
    assert_refused([GOOD, raw], 1, word)


def test_unknown_enum_value_lists_allowed_ones() -> None:
    raw = {"field": "call_status", "op": "in", "value": ["ended", "finished"]}
    error = refused("call", [raw])
    assert error.index == 0
    assert "unknown value 'finished'" in str(error)
    assert "registered, not_connected, ongoing, ended, error" in str(error)
    assert_refused([{"field": "user_sentiment", "op": "in", "value": ["positive"]}], 0,
                   "unknown value")


@pytest.mark.parametrize(
    ("raw", "word"),
    [
        ({"field": "duration_ms", "op": "bt", "value": [5, 3]}, "greater"),
        ({"field": "metadata", "key": "k", "op": "bt", "value": [2.5, 2]}, "greater"),
        ({"field": "duration_ms", "op": "bt", "value": [1]}, "[lo, hi]"),
        ({"field": "duration_ms", "op": "bt", "value": [1, 2, 3]}, "[lo, hi]"),
        ({"field": "duration_ms", "op": "bt", "value": 3}, "[lo, hi]"),
        ({"field": "duration_ms", "op": "bt", "value": [1, True]}, "integer"),
    ],
)
def test_bad_between(raw: dict[str, Any], word: str) -> None:
    assert_refused([GOOD, raw], 1, word)


def test_missing_key_on_keyed_field() -> None:
    assert_refused([{"field": "metadata", "op": "eq", "value": "x"}], 0, "needs a 'key'")


@pytest.mark.parametrize("key", ["", 5, ["k"]])
def test_key_must_be_non_empty_string(key: object) -> None:
    assert_refused([{"field": "metadata", "key": key, "op": "pr"}], 0, "non-empty string")


def test_key_on_non_keyed_field() -> None:
    assert_refused([GOOD, {**GOOD, "key": "k"}], 1, "takes no 'key'")
    # A null key is no key at all.
    assert parse_filters("call", [{**GOOD, "key": None}])[0].key is None


@pytest.mark.parametrize(
    "raw",
    [
        {"field": "from_number", "op": "eq", "value": "a\x00b"},
        {"field": "call_id", "op": "in", "value": ["ok", "a\x00"]},
        {"field": "metadata", "key": "k\x00", "op": "pr"},
        {"field": "agent", "op": "in", "value": [{"agent_id": "\x00"}]},
    ],
)
def test_nul_refused(raw: dict[str, Any]) -> None:
    assert_refused([raw], 0, "NUL")


def test_lone_surrogate_refused() -> None:
    assert_refused([{"field": "from_number", "op": "eq", "value": "\ud800"}], 0, "surrogate")


def test_over_long_string_and_list() -> None:
    assert parse_filters("call", [{"field": "from_number", "op": "eq", "value": "x" * 1000}])
    assert_refused([{"field": "from_number", "op": "eq", "value": "x" * 1001}], 0, "longer")
    assert_refused([{"field": "metadata", "key": "k" * 1001, "op": "pr"}], 0, "longer")
    assert_refused([{"field": "call_id", "op": "in", "value": ["x"] * 1001}], 0, "1000 entries")


@pytest.mark.parametrize("op", ["pr", "np"])
def test_presence_ops_take_no_value(op: str) -> None:
    assert_refused([{"field": "from_number", "op": op, "value": "x"}], 0, "takes no value")
    assert_refused([{"field": "metadata", "key": "k", "op": op, "value": False}], 0,
                   "takes no value")
    assert parse_filters("call", [{"field": "from_number", "op": op, "value": None}])


@pytest.mark.parametrize(
    ("entry", "word"),
    [
        ("a1", "object"),
        ({"agent_id": "a1", "version": [1]}, "unknown key"),
        ({"versions": [1]}, "agent_id"),
        ({"agent_id": 7}, "string"),
        ({"agent_id": "a1", "versions": [-1]}, ">= 0"),
        ({"agent_id": "a1", "versions": [True]}, ">= 0"),
        ({"agent_id": "a1", "versions": 1}, "list"),
        ({"agent_id": "a1", "versions": []}, "non-empty"),
    ],
)
def test_bad_agent_entry(entry: object, word: str) -> None:
    assert_refused([{"field": "agent", "op": "in", "value": [{"agent_id": "ok"}, entry]}], 0,
                   word)


# --------------------------------------------------------------------------- compilation


def compile_sql(kind: str, rows: list[FilterRow]) -> tuple[str, dict[str, Any]]:
    compiled = matching_sessions("ws_1", kind, rows).compile(dialect=postgresql.dialect())
    return str(compiled), dict(compiled.params)


@pytest.mark.parametrize(("kind", "raw"), VALID_CASES)
def test_every_valid_row_compiles(kind: str, raw: dict[str, Any]) -> None:
    sql, params = compile_sql(kind, parse_filters(kind, [raw]))
    assert "sessions.workspace_id = " in sql and "sessions.kind = " in sql
    assert "ws_1" in params.values() and kind in params.values()


def test_all_rows_of_a_kind_compile_together() -> None:
    for kind in ("call", "chat"):
        raws = [raw for k, raw in VALID_CASES if k == kind]
        sql, _ = compile_sql(kind, parse_filters(kind, raws, max_rows=len(raws)))
        assert sql.count(" AND ") >= len(raws)


def test_keys_and_values_are_bound_parameters() -> None:
    evil = "x'; drop table sessions; --"
    rows = parse_filters("call", [
        {"field": "metadata", "key": evil, "op": "gt", "value": 5},
        {"field": "dynamic_variables", "key": evil, "op": "eq", "value": evil},
        {"field": "from_number", "op": "co", "value": evil},
        {"field": "call_id", "op": "in", "value": [evil]},
        {"field": "agent", "op": "in", "value": [{"agent_id": evil}]},
    ])
    sql, params = compile_sql("call", rows)
    assert "drop" not in sql and "'" + "x" not in sql
    values = [str(v) for v in params.values()]
    assert evil in values
    assert "%" + evil.replace("_", "\\_") + "%" in values


def test_like_patterns_are_escaped() -> None:
    [row] = parse_filters("call", [{"field": "from_number", "op": "sw", "value": "50%_\\"}])
    sql, params = compile_sql("call", [row])
    assert "ESCAPE" in sql
    assert "50\\%\\_\\\\%" in params.values()


def test_number_ops_are_guarded_by_jsonb_typeof() -> None:
    [row] = parse_filters("call", [{"field": "metadata", "key": "n", "op": "ge", "value": 1}])
    sql, params = compile_sql("call", [row])
    assert "CASE WHEN" in sql and "jsonb_typeof" in sql and "NUMERIC" in sql
    assert "number" in params.values()


def test_empty_filters_compile_to_true() -> None:
    assert str(compile_filters("chat", []).compile(dialect=postgresql.dialect())) == "true"


def test_hand_built_row_for_the_other_kind_is_refused() -> None:
    with pytest.raises(InvalidFilter, match=r"filters\[1\]"):
        compile_filters("chat", [
            FilterRow("duration_ms", "gt", 1, None), FilterRow("call_status", "in", ["x"], None),
        ])


# --------------------------------------------------------------------------- evaluator


def session(**values: Any) -> dict[str, Any]:
    return {"metadata": {}, "dynamic_variables": {}, "custom_analysis_data": {},
            "transfer_agent_ids": [], **values}


def test_evaluator_ne_and_nin_never_match_null() -> None:
    [ne, nin] = parse_filters("call", [{"field": "from_number", "op": "ne", "value": "x"},
                                      {"field": "direction", "op": "nin", "value": ["inbound"]}])
    assert not evaluate_row(ne, session(from_number=None))
    assert not evaluate_row(nin, session(direction=None))
    assert evaluate_filters([ne, nin], session(from_number="y", direction="outbound"))


def test_evaluator_keyed_numbers_are_type_strict() -> None:
    [gt] = parse_filters("call", [{"field": "metadata", "key": "n", "op": "gt", "value": 4}])
    assert not evaluate_row(gt, session(metadata={"n": "5"}))
    assert not evaluate_row(gt, session(metadata={"n": True}))
    assert evaluate_row(gt, session(metadata={"n": 4.5}))
    [eq] = parse_filters("call", [{"field": "metadata", "key": "n", "op": "eq", "value": 1}])
    assert not evaluate_row(eq, session(metadata={"n": True}))
    assert evaluate_row(eq, session(metadata={"n": 1.0}))
