"""The SQL filter compiler against real Postgres, checked against the Python evaluator."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from itertools import product
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, create_engine, delete, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from scheduler.jobs.filters import (
    FIELDS,
    FieldSpec,
    FilterRow,
    matching_sessions,
    parse_filters,
)
from shared.models import Base, SessionRecord, Workspace
from shared.vocabulary import CALL_STATUSES, CALL_TYPES, CHAT_STATUSES, DIRECTIONS, SENTIMENTS
from shared.vocabulary import SESSION_KINDS as KINDS
from tests.support.filters_oracle import evaluate_filters

pytestmark = pytest.mark.integration

SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
WORKSPACES = ("ws_a", "ws_b")
AGENTS = ("ag1", "ag2", "ag%_\\")
REASONS = ("user_hangup", "agent_hangup", "dial_failed")
# Fragments that make LIKE wildcards, quotes, backslashes and non-ASCII text meet.
FRAGMENTS = ("", "a", "A", "50", "%", "_", "off", "o'k", "\\", "ü", "日本", " ")
# Few keys, so that generated rows and generated sessions often meet on the same entry.
JSON_KEYS = ("k", "x'; drop", "%_ü")
# Ints and floats that collide (1 / 1.0, 2**60 / float(2**60)) and straddle each other.
NUMBERS = (0, 1, -1, 5, 2**60, 1.5, -0.5, 1.0, 0.1, 1e20, float(2**60))

BASE_SETTINGS = settings(
    deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- database


def _server_url() -> Any:
    # The filters only need a scratch database on some server; DATABASE_URL picks which one.
    url = make_url(os.environ.get("DATABASE_URL") or SERVER_URL)
    return url.set(drivername="postgresql+psycopg")


@pytest.fixture(scope="module")
def filter_engine() -> Iterator[Engine]:
    server = _server_url()
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                          connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres unreachable at {server.render_as_string()}: {exc}")
    name = f"filters_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(server.set(database=name))
    try:
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(Workspace), [{"id": ws} for ws in WORKSPACES])
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def loaded(engine: Engine, sessions: list[dict[str, Any]]) -> Iterator[Connection]:
    """A connection that sees exactly these sessions; rolled back afterwards."""
    with engine.connect() as conn:
        conn.execute(delete(SessionRecord))
        if sessions:
            conn.execute(insert(Base.metadata.tables["sessions"]), sessions)
        try:
            yield conn
        finally:
            conn.rollback()


def sql_matches(conn: Connection, ws: str, kind: str, rows: list[FilterRow]) -> set[str]:
    return set(conn.execute(matching_sessions(ws, kind, rows)).scalars())


def py_matches(sessions: list[dict[str, Any]], ws: str, kind: str,
               rows: list[FilterRow]) -> set[str]:
    return {
        s["session_id"] for s in sessions
        if s["workspace_id"] == ws and s["kind"] == kind and evaluate_filters(rows, s)
    }


def assert_agree(conn: Connection, sessions: list[dict[str, Any]], kind: str,
                 rows: list[FilterRow]) -> None:
    for ws in WORKSPACES:
        assert sql_matches(conn, ws, kind, rows) == py_matches(sessions, ws, kind, rows), rows


def session(session_id: str, ws: str = "ws_a", kind: str = "call", **values: Any) -> dict:
    """A full `sessions` row (column names, as the evaluator reads them), nulls by default."""
    columns = {column.name: None for column in SessionRecord.__table__.columns
               if column.server_default is None}
    return {**columns, "session_id": session_id, "workspace_id": ws, "kind": kind,
            "agent_id": "ag1", "metadata": {}, "dynamic_variables": {},
            "custom_analysis_data": {}, "transfer_agent_ids": [], **values}


def field_ops(kind: str) -> list[tuple[str, str]]:
    return [(field, op) for field, spec in FIELDS.items() if kind in spec.kinds
            for op in spec.ops]


# --------------------------------------------------------------------------- strategies

# Pre-joined so one draw makes one string: generation, not Postgres, is the slow part here.
TEXTS = sorted({"".join(parts) for n in range(3) for parts in product(FRAGMENTS, repeat=n)}
               | {"50%_off", "o'k\\_ü", "日本 50%"})
# Single fragments half the time, so that filter values and stored values often overlap.
texts = st.sampled_from(FRAGMENTS) | st.sampled_from(TEXTS)
small_ints = st.integers(0, 6)
numbers = st.sampled_from(NUMBERS)
json_scalars = st.one_of(texts, numbers, st.booleans(), st.sampled_from(["5", "true", "1.5"]))
# Numbers weighted up: they are the values the typed guards have to get right.
json_values = st.one_of(st.none(), texts, numbers, numbers, st.booleans(),
                        st.sampled_from(["5", "true", "1.5", "", [1], {"a": 1}, []]))
json_objects = st.dictionaries(st.sampled_from(JSON_KEYS), json_values, max_size=3)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


SESSION_VALUES = st.fixed_dictionaries({
    "workspace_id": st.sampled_from(WORKSPACES),
    "kind": st.sampled_from(KINDS),
    "agent_id": st.sampled_from(AGENTS),
    "agent_version": optional(st.integers(0, 3)),
    "batch_call_id": optional(texts),
    "from_number": optional(texts),
    "to_number": optional(texts),
    "status": optional(st.sampled_from(sorted({*CALL_STATUSES, *CHAT_STATUSES}))),
    "call_type": optional(st.sampled_from(CALL_TYPES)),
    "direction": optional(st.sampled_from(DIRECTIONS)),
    "disconnection_reason": optional(st.sampled_from(REASONS)),
    "start_timestamp": optional(small_ints),
    "end_timestamp": optional(small_ints),
    "duration_ms": optional(small_ints),
    "metadata": json_objects,
    "dynamic_variables": json_objects,
    "custom_analysis_data": json_objects,
    "transfer_agent_ids": st.lists(st.sampled_from(AGENTS), max_size=2),
    "successful": optional(st.booleans()),
    "in_voicemail": optional(st.booleans()),
    "user_sentiment": optional(st.sampled_from(SENTIMENTS)),
})


@st.composite
def session_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    values = draw(st.lists(SESSION_VALUES, min_size=20, max_size=30))
    # Ids carry wildcards and quotes too, and stay unique through the index prefix.
    suffixes = draw(st.lists(texts, min_size=len(values), max_size=len(values)))
    pairs = zip(suffixes, values, strict=True)
    return [session(f"{i}{suffix}", **v) for i, (suffix, v) in enumerate(pairs)]


def agent_entries() -> st.SearchStrategy[dict[str, Any]]:
    plain = st.fixed_dictionaries({"agent_id": st.sampled_from(AGENTS)})
    versioned = st.fixed_dictionaries({
        "agent_id": st.sampled_from(AGENTS),
        "versions": st.lists(st.integers(0, 3), min_size=1, max_size=3),
    })
    return plain | versioned


def ordered_pair(items: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    def by_value(x: Any) -> Decimal:
        return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)

    return st.lists(items, min_size=2, max_size=2).map(lambda pair: sorted(pair, key=by_value))


def scalar_values(field: str, spec: FieldSpec, op: str, ids: list[str]) -> st.SearchStrategy:
    if spec.keyed:
        by_op = {"eq": json_scalars, "ne": json_scalars, "sw": texts, "ew": texts, "co": texts}
        return by_op.get(op, numbers)
    if spec.choices:
        return st.sampled_from(spec.choices)
    ids_or_texts = st.sampled_from(ids) | texts if ids else texts
    by_field = {
        "agent": agent_entries(),
        "call_id": ids_or_texts,
        "chat_id": ids_or_texts,
        "disconnection_reason": st.sampled_from(REASONS),
        "transfer_agent": st.sampled_from(AGENTS),
    }
    by_type = {"string": texts, "int": small_ints, "bool": st.booleans()}
    return by_field.get(field, by_type.get(spec.value, texts))


def row_values(field: str, op: str, ids: list[str]) -> st.SearchStrategy[Any]:
    scalar = scalar_values(field, FIELDS[field], op, ids)
    if op in ("pr", "np"):
        return st.none()
    if op in ("in", "nin"):
        return st.lists(scalar, min_size=1, max_size=3)
    return ordered_pair(scalar) if op == "bt" else scalar


@st.composite
def raw_rows(draw: st.DrawFn, field: str, op: str, ids: list[str]) -> dict[str, Any]:
    raw = {"field": field, "op": op, "value": draw(row_values(field, op, ids))}
    if FIELDS[field].keyed:
        raw["key"] = draw(st.sampled_from(JSON_KEYS))
    return raw


@st.composite
def filter_rows(draw: st.DrawFn, kind: str, ids: list[str]) -> list[FilterRow]:
    chosen = draw(st.lists(st.sampled_from(field_ops(kind)), min_size=1, max_size=3))
    return parse_filters(kind, [draw(raw_rows(field, op, ids)) for field, op in chosen])


# --------------------------------------------------------------------------- properties


@settings(BASE_SETTINGS, max_examples=150)
@given(data=st.data())
def test_sql_matches_python_evaluator(filter_engine: Engine, data: st.DataObject) -> None:
    sessions = data.draw(session_sets(), label="sessions")
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    rows = data.draw(filter_rows(kind, [s["session_id"] for s in sessions]), label="rows")
    with loaded(filter_engine, sessions) as conn:
        assert_agree(conn, sessions, kind, rows)


@settings(BASE_SETTINGS, max_examples=40)
@given(data=st.data())
def test_every_field_and_op_matches_evaluator(filter_engine: Engine,
                                              data: st.DataObject) -> None:
    # Random (field, op) choice favours some pairs; here every pair meets every data set.
    sessions = data.draw(session_sets(), label="sessions")
    ids = [s["session_id"] for s in sessions]
    with loaded(filter_engine, sessions) as conn:
        for kind in KINDS:
            for field, op in field_ops(kind):
                raw = data.draw(raw_rows(field, op, ids), label=f"{kind} {field} {op}")
                assert_agree(conn, sessions, kind, parse_filters(kind, [raw]))


@settings(BASE_SETTINGS, max_examples=100)
@given(data=st.data())
def test_results_stay_in_workspace_and_kind(filter_engine: Engine, data: st.DataObject) -> None:
    sessions = data.draw(session_sets(), label="sessions")
    ws, kind = data.draw(st.sampled_from(WORKSPACES)), data.draw(st.sampled_from(KINDS))
    rows = data.draw(filter_rows(kind, [s["session_id"] for s in sessions]), label="rows")
    by_id = {s["session_id"]: s for s in sessions}
    # Aiming at other workspaces' sessions by id finds nothing: the workspace always wins.
    foreign = [s["session_id"] for s in sessions if s["workspace_id"] != ws] or ["none"]
    id_field = "call_id" if kind == "call" else "chat_id"
    aimed = parse_filters(kind, [{"field": id_field, "op": "in", "value": foreign}])
    with loaded(filter_engine, sessions) as conn:
        found = sql_matches(conn, ws, kind, rows)
        assert sql_matches(conn, ws, kind, aimed) == set()
    assert all(by_id[i]["workspace_id"] == ws and by_id[i]["kind"] == kind for i in found)


# --------------------------------------------------------------------------- examples


def matches(engine: Engine, sessions: list[dict[str, Any]], raw: list[dict[str, Any]],
            kind: str = "call") -> set[str]:
    """Load, query, and insist the evaluator agrees before handing back the SQL answer."""
    rows = parse_filters(kind, raw)
    with loaded(engine, sessions) as conn:
        found = sql_matches(conn, "ws_a", kind, rows)
    assert found == py_matches(sessions, "ws_a", kind, rows)
    return found


def test_contains_matches_percent_and_underscore_literally(filter_engine: Engine) -> None:
    numbers = {"lit": "50%_off", "inside": "get 50%_off now", "pct": "50% off",
               "any": "50XYoff", "one": "50%Xoff", "none": None}
    sessions = [session(i, from_number=n) for i, n in numbers.items()]
    raw = [{"field": "from_number", "op": "co", "value": "50%_off"}]
    assert matches(filter_engine, sessions, raw) == {"lit", "inside"}
    raw = [{"field": "from_number", "op": "sw", "value": "50%_"}]
    assert matches(filter_engine, sessions, raw) == {"lit"}
    raw = [{"field": "from_number", "op": "ew", "value": "_off"}]
    assert matches(filter_engine, sessions, raw) == {"lit"}


def test_backslash_is_literal(filter_engine: Engine) -> None:
    sessions = [session("bs", to_number="a\\%b"), session("plain", to_number="a%b")]
    raw = [{"field": "to_number", "op": "co", "value": "\\%"}]
    assert matches(filter_engine, sessions, raw) == {"bs"}
    meta = [session("m", metadata={"k": "x\\_y"}), session("n", metadata={"k": "x_y"})]
    raw = [{"field": "metadata", "key": "k", "op": "co", "value": "\\_"}]
    assert matches(filter_engine, meta, raw) == {"m"}


def test_string_ops_are_case_sensitive(filter_engine: Engine) -> None:
    sessions = [session("low", batch_call_id="abc"), session("up", batch_call_id="ABC")]
    assert matches(filter_engine, sessions,
                   [{"field": "batch_call_id", "op": "eq", "value": "ABC"}]) == {"up"}
    assert matches(filter_engine, sessions,
                   [{"field": "batch_call_id", "op": "sw", "value": "ab"}]) == {"low"}
    assert matches(filter_engine, sessions,
                   [{"field": "batch_call_id", "op": "co", "value": "B"}]) == {"up"}


def test_ne_and_nin_never_match_null(filter_engine: Engine) -> None:
    sessions = [session("web", direction=None, from_number=None, metadata={"k": None}),
                session("out", direction="outbound", from_number="+1", metadata={}),
                session("in", direction="inbound", from_number="+2", metadata={"k": "b"})]
    assert matches(filter_engine, sessions,
                   [{"field": "direction", "op": "nin", "value": ["inbound"]}]) == {"out"}
    assert matches(filter_engine, sessions,
                   [{"field": "from_number", "op": "ne", "value": "+2"}]) == {"out"}
    assert matches(filter_engine, sessions,
                   [{"field": "metadata", "key": "k", "op": "ne", "value": "a"}]) == {"in"}


def test_keyed_number_ops_skip_non_numbers(filter_engine: Engine) -> None:
    values = {"str": "5", "true": True, "num": 5, "float": 5.5, "null": None, "obj": {"a": 6}}
    sessions = [session(i, custom_analysis_data={"n": v}) for i, v in values.items()]
    sessions.append(session("absent"))
    for op, value, expected in [("gt", 4, {"num", "float"}), ("ge", 5, {"num", "float"}),
                                ("lt", 5.5, {"num"}), ("le", 5.5, {"num", "float"}),
                                ("eq", 5, {"num"}), ("ne", 5, {"float"}),
                                ("eq", 1, set()), ("eq", "5", {"str"}), ("eq", True, {"true"}),
                                ("ne", True, set()), ("bt", [5, 5.5], {"num", "float"})]:
        raw = [{"field": "custom_analysis_data", "key": "n", "op": op, "value": value}]
        assert matches(filter_engine, sessions, raw) == expected, (op, value)


def test_presence_distinguishes_missing_null_and_set(filter_engine: Engine) -> None:
    sessions = [session("missing"), session("null", dynamic_variables={"k": None}),
                session("set", dynamic_variables={"k": ""}),
                session("false", dynamic_variables={"k": False}),
                session("other", dynamic_variables={"j": 1})]
    pr = [{"field": "dynamic_variables", "key": "k", "op": "pr"}]
    np = [{"field": "dynamic_variables", "key": "k", "op": "np"}]
    assert matches(filter_engine, sessions, pr) == {"set", "false"}
    assert matches(filter_engine, sessions, np) == {"missing", "null", "other"}
    sentiments = [session("s", user_sentiment="Neutral"), session("u", user_sentiment=None)]
    assert matches(filter_engine, sentiments, [{"field": "user_sentiment", "op": "np"}]) == {"u"}
    assert matches(filter_engine, sentiments, [{"field": "user_sentiment", "op": "pr"}]) == {"s"}


def test_between_is_inclusive_at_both_ends(filter_engine: Engine) -> None:
    sessions = [session(f"t{t}", start_timestamp=t, metadata={"n": t}) for t in range(1, 6)]
    sessions.append(session("none"))
    raw = [{"field": "start_timestamp", "op": "bt", "value": [2, 4]}]
    assert matches(filter_engine, sessions, raw) == {"t2", "t3", "t4"}
    raw = [{"field": "metadata", "key": "n", "op": "bt", "value": [2, 4.0]}]
    assert matches(filter_engine, sessions, raw) == {"t2", "t3", "t4"}
    raw = [{"field": "start_timestamp", "op": "bt", "value": [3, 3]}]
    assert matches(filter_engine, sessions, raw) == {"t3"}


def test_agents_transfers_and_workspace(filter_engine: Engine) -> None:
    sessions = [session("a1v1", agent_id="a1", agent_version=1),
                session("a1v2", agent_id="a1", agent_version=2, transfer_agent_ids=["b", "c"]),
                session("a2", agent_id="a2", agent_version=None, transfer_agent_ids=["c"]),
                session("other_ws", ws="ws_b", agent_id="a1", agent_version=1),
                session("chat", kind="chat", agent_id="a1", agent_version=1)]
    raw = [{"field": "agent", "op": "in",
            "value": [{"agent_id": "a1", "versions": [1]}, {"agent_id": "a2"}]}]
    assert matches(filter_engine, sessions, raw) == {"a1v1", "a2"}
    raw = [{"field": "transfer_agent", "op": "in", "value": ["b", "z"]}]
    assert matches(filter_engine, sessions, raw) == {"a1v2"}
    assert matches(filter_engine, sessions, []) == {"a1v1", "a1v2", "a2"}
    assert matches(filter_engine, sessions, [], kind="chat") == {"chat"}
