"""Filter rows: validation and compilation to SQL over `sessions`.

The vocabulary lives in one table, `FIELDS`: each field names the column it reads, the session
kinds it exists for, the ops it accepts and the type of its value. Validation and SQL
compilation read that table; so does the plain-Python reference evaluator the property tests
hold the SQL against (`tests/support/filters_oracle.py`), which deliberately shares no
expression code with the SQL side.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    or_,
    select,
    true,
)

from shared.errors import InvalidFilter, InvalidInput
from shared.models import SessionRecord
from shared.vocabulary import (
    CALL_STATUSES,
    CALL_TYPES,
    CHAT_STATUSES,
    DIRECTIONS,
    SENTIMENTS,
    SESSION_KINDS,
    is_json_integer,
    is_json_number,
    json_type,
)

ROW_KEYS = frozenset({"field", "op", "value", "key"})
AGENT_KEYS = frozenset({"agent_id", "versions"})
MAX_STRING = 1000
MAX_LIST = 1000
# Epoch-ms timestamps and versions live in BIGINT/INTEGER columns; anything beyond int64 is
# nonsense input, refused here rather than left to the database.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_NUMBER = sys.float_info.max

TEXT_OPS = ("eq", "ne", "sw", "ew", "co", "pr", "np")
ORDER_OPS = ("eq", "ne", "gt", "ge", "lt", "le", "bt")
LIST_OPS = ("in", "nin")
PRESENCE_OPS = ("pr", "np")
KEYED_OPS = ("eq", "ne", "sw", "ew", "co", "gt", "ge", "lt", "le", "bt", "pr", "np")

_CALL = frozenset({"call"})
_CHAT = frozenset({"chat"})
_BOTH = _CALL | _CHAT


@dataclass(frozen=True)
class FilterRow:
    """One validated row. `value` is None for pr/np; `key` is set only for keyed fields."""

    field: str
    op: str
    value: Any
    key: str | None


@dataclass(frozen=True)
class FieldSpec:
    """How one filter field reads the `sessions` table.

    `value` is the type of one value: "string", "int", "bool", "agent" or "json" (keyed
    fields, where the op decides the type). `builder` picks the SQL shape.
    """

    column: str
    kinds: frozenset[str]
    ops: tuple[str, ...]
    value: str
    choices: tuple[str, ...] = ()
    builder: str = "column"

    @property
    def keyed(self) -> bool:
        return self.builder == "keyed"


def _text(column: str) -> FieldSpec:
    return FieldSpec(column, _CALL, TEXT_OPS, "string")


def _enum(column: str, kinds: frozenset[str], choices: tuple[str, ...]) -> FieldSpec:
    return FieldSpec(column, kinds, LIST_OPS, "string", choices)


def _flag(column: str, kinds: frozenset[str]) -> FieldSpec:
    return FieldSpec(column, kinds, ("eq", "pr", "np"), "bool")


def _time(column: str) -> FieldSpec:
    return FieldSpec(column, _BOTH, ORDER_OPS, "int")


def _keyed(column: str) -> FieldSpec:
    return FieldSpec(column, _BOTH, KEYED_OPS, "json", builder="keyed")


FIELDS: dict[str, FieldSpec] = {
    "agent": FieldSpec("agent_id", _BOTH, ("in",), "agent", builder="agent"),
    "call_id": FieldSpec("session_id", _CALL, ("eq", "in"), "string"),
    "chat_id": FieldSpec("session_id", _CHAT, ("eq", "in"), "string"),
    "batch_call_id": _text("batch_call_id"),
    "from_number": _text("from_number"),
    "to_number": _text("to_number"),
    "call_status": _enum("status", _CALL, CALL_STATUSES),
    "chat_status": _enum("status", _CHAT, CHAT_STATUSES),
    "call_type": _enum("call_type", _CALL, CALL_TYPES),
    "direction": _enum("direction", _CALL, DIRECTIONS),
    "disconnection_reason": FieldSpec("disconnection_reason", _BOTH, LIST_OPS, "string"),
    "user_sentiment": FieldSpec(
        "user_sentiment", _BOTH, (*LIST_OPS, *PRESENCE_OPS), "string", SENTIMENTS
    ),
    "call_successful": _flag("successful", _CALL),
    "chat_successful": _flag("successful", _CHAT),
    # Voicemail detection only exists for voice calls.
    "in_voicemail": _flag("in_voicemail", _CALL),
    "start_timestamp": _time("start_timestamp"),
    "end_timestamp": _time("end_timestamp"),
    "duration_ms": _time("duration_ms"),
    "transfer_agent": FieldSpec("transfer_agent_ids", _BOTH, ("in",), "string", builder="overlap"),
    "custom_analysis_data": _keyed("custom_analysis_data"),
    "metadata": _keyed("metadata"),
    "dynamic_variables": _keyed("dynamic_variables"),
}


# --------------------------------------------------------------------------- validation


class _Problem(Exception):
    """One problem with one row; parse_filters adds the row index."""


def _check_kind(kind: object) -> str:
    if kind not in SESSION_KINDS:
        raise InvalidInput(f"kind must be 'call' or 'chat', got {kind!r}")
    return str(kind)


def _check_string(value: object) -> None:
    if not isinstance(value, str):
        raise _Problem(f"value must be a string, got {json_type(value)}")
    _check_text(value)


def _check_text(value: str) -> None:
    # Postgres text cannot hold NUL, and psycopg cannot encode lone surrogates: refuse both
    # here so bad input is a 422, never a database error.
    if "\x00" in value:
        raise _Problem("string contains a NUL character")
    if len(value) > MAX_STRING:
        raise _Problem(f"string is longer than {MAX_STRING} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Problem("string is not valid Unicode (lone surrogate)") from None


def _check_int(value: object) -> None:
    if not is_json_integer(value):
        raise _Problem(f"value must be an integer, got {json_type(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise _Problem("integer out of range (64-bit)")


def _check_bool(value: object) -> None:
    if not isinstance(value, bool):
        raise _Problem(f"value must be a boolean, got {json_type(value)}")


def _check_number(value: object) -> None:
    if not is_json_number(value):
        raise _Problem(f"value must be a number, got {json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Problem("number must be finite")
    # JSON numbers beyond a double are not useful filters and would overflow serializers.
    if abs(value) > MAX_NUMBER:
        raise _Problem("number out of range")


def _check_scalar(value: object) -> None:
    """eq/ne on keyed fields: the value's own type picks string, number or boolean."""
    if isinstance(value, str):
        _check_text(value)
    elif not isinstance(value, bool):
        try:
            _check_number(value)
        except _Problem:
            raise _Problem(
                f"value must be a string, number or boolean, got {json_type(value)}"
            ) from None


def _check_version(value: object) -> None:
    if not is_json_integer(value) or value < 0:
        raise _Problem(f"versions must hold integers >= 0, got {value!r}")
    _check_int(value)


def _check_agent(value: object) -> None:
    if not isinstance(value, dict):
        raise _Problem(f"agent entry must be an object {{agent_id, versions?}}, got "
                       f"{json_type(value)}")
    extra = sorted(str(k) for k in value if k not in AGENT_KEYS)
    if extra:
        raise _Problem(f"agent entry has unknown key(s) {', '.join(extra)}")
    if "agent_id" not in value:
        raise _Problem("agent entry needs an agent_id")
    _check_string(value["agent_id"])
    if "versions" in value:
        _check_list(value["versions"], _check_version)


_VALUE_CHECKS: dict[str, Callable[[object], None]] = {
    "string": _check_string,
    "int": _check_int,
    "bool": _check_bool,
    "agent": _check_agent,
}

# Keyed fields: the op decides which JSON type the row compares against.
_KEYED_CHECKS: dict[str, Callable[[object], None]] = {
    "eq": _check_scalar, "ne": _check_scalar,
    "sw": _check_string, "ew": _check_string, "co": _check_string,
    "gt": _check_number, "ge": _check_number, "lt": _check_number, "le": _check_number,
    "bt": _check_number,
}


def _check_list(value: object, check: Callable[[object], None]) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _Problem(f"value must be a non-empty list, got {json_type(value)}")
    if len(value) > MAX_LIST:
        raise _Problem(f"list has more than {MAX_LIST} entries")
    for position, item in enumerate(value):
        try:
            check(item)
        except _Problem as exc:
            raise _Problem(f"value[{position}]: {exc}") from None
    return list(value)


def _as_decimal(value: int | float) -> Decimal:
    # A float is taken as the decimal JSON wrote (0.1 stays 0.1), which is how jsonb stores it.
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _check_range(value: object, check: Callable[[object], None]) -> list[Any]:
    if not isinstance(value, list) or len(value) != 2:
        raise _Problem(f"bt value must be a list [lo, hi], got {json_type(value)}")
    for item in value:
        check(item)
    low, high = value
    if _as_decimal(low) > _as_decimal(high):
        raise _Problem(f"bt lower bound {low!r} is greater than upper bound {high!r}")
    return list(value)


def _choice_check(field: str, spec: FieldSpec) -> Callable[[object], None]:
    def check(value: object) -> None:
        _VALUE_CHECKS[spec.value](value)
        if value not in spec.choices:
            raise _Problem(
                f"unknown value {value!r} for {field} (allowed: {', '.join(spec.choices)})"
            )

    return check


def _value_check(field: str, spec: FieldSpec, op: str) -> Callable[[object], None]:
    if spec.keyed:
        return _KEYED_CHECKS[op]
    if spec.choices:
        return _choice_check(field, spec)
    return _VALUE_CHECKS[spec.value]


def _check_row_object(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Problem(f"row must be an object, got {json_type(raw)}")
    extra = sorted(str(k) for k in raw if k not in ROW_KEYS)
    if extra:
        raise _Problem(f"unknown row key(s) {', '.join(extra)} (a row has field, op, value, key)")
    return raw


def _check_field(kind: str, row: Mapping[str, Any]) -> tuple[str, FieldSpec]:
    field = row.get("field")
    if not isinstance(field, str):
        raise _Problem(f"'field' must be a string, got {json_type(field)}")
    spec = FIELDS.get(field)
    if spec is None:
        raise _Problem(f"unknown field {field[:100]!r} (known: {', '.join(sorted(FIELDS))})")
    if kind not in spec.kinds:
        raise _Problem(f"field {field!r} is not available for {kind} sessions")
    return field, spec


def _check_op(field: str, spec: FieldSpec, row: Mapping[str, Any]) -> str:
    op = row.get("op")
    if not isinstance(op, str):
        raise _Problem(f"'op' must be a string, got {json_type(op)}")
    if op not in spec.ops:
        raise _Problem(
            f"op {op[:20]!r} is not allowed for field {field!r} (allowed: {', '.join(spec.ops)})"
        )
    return op


def _check_key(field: str, spec: FieldSpec, row: Mapping[str, Any]) -> str | None:
    key = row.get("key")
    if not spec.keyed:
        # A null key is no key; anything else on a column field is a mistake worth naming.
        if key is not None:
            raise _Problem(f"field {field!r} takes no 'key'")
        return None
    if key is None:
        raise _Problem(f"field {field!r} needs a 'key' naming the entry")
    if not isinstance(key, str) or not key:
        raise _Problem(f"'key' must be a non-empty string, got {json_type(key)}")
    try:
        _check_text(key)
    except _Problem as exc:
        raise _Problem(f"key: {exc}") from None
    return key


def _check_value(field: str, spec: FieldSpec, op: str, row: Mapping[str, Any]) -> Any:
    if op in PRESENCE_OPS:
        if row.get("value") is not None:
            raise _Problem(f"op {op!r} takes no value")
        return None
    if "value" not in row:
        raise _Problem(f"op {op!r} needs a value")
    check = _value_check(field, spec, op)
    value = row["value"]
    if op in LIST_OPS:
        return _check_list(value, check)
    if op == "bt":
        return _check_range(value, check)
    check(value)
    return value


def _parse_row(kind: str, raw: object) -> FilterRow:
    row = _check_row_object(raw)
    field, spec = _check_field(kind, row)
    op = _check_op(field, spec, row)
    key = _check_key(field, spec, row)
    return FilterRow(field=field, op=op, value=_check_value(field, spec, op, row), key=key)


def parse_filters(kind: str, raw: object, *, max_rows: int = 50) -> list[FilterRow]:
    """Validate decoded JSON filter rows; raise InvalidFilter naming `filters[i]` and why."""
    _check_kind(kind)
    if not isinstance(raw, list):
        raise InvalidFilter(None, f"filters must be a JSON array of rows, got {json_type(raw)}")
    if len(raw) > max_rows:
        raise InvalidFilter(None, f"too many rows: {len(raw)} (at most {max_rows})")
    rows = []
    for index, raw_row in enumerate(raw):
        try:
            rows.append(_parse_row(kind, raw_row))
        except _Problem as exc:
            raise InvalidFilter(index, str(exc)) from None
    return rows


# --------------------------------------------------------------------------- SQL

_Cond = ColumnElement[bool]


def _like_escape(text: str) -> str:
    # Literal matching: the escape character itself first, then the two wildcards.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(expr: ColumnElement[Any], pattern: str) -> _Cond:
    # LIKE 'prefix%' with an explicit ESCAPE can use a text_pattern_ops btree index for `sw`.
    return expr.like(pattern, escape="\\")


_SQL_OPS: dict[str, Callable[[ColumnElement[Any], Any], _Cond]] = {
    # SQL comparisons with NULL are NULL, so ne / nin never match a missing value.
    "eq": lambda expr, value: expr == value,
    "ne": lambda expr, value: expr != value,
    "gt": lambda expr, value: expr > value,
    "ge": lambda expr, value: expr >= value,
    "lt": lambda expr, value: expr < value,
    "le": lambda expr, value: expr <= value,
    "bt": lambda expr, value: expr.between(value[0], value[1]),
    "sw": lambda expr, value: _like(expr, _like_escape(value) + "%"),
    "ew": lambda expr, value: _like(expr, "%" + _like_escape(value)),
    "co": lambda expr, value: _like(expr, "%" + _like_escape(value) + "%"),
    "in": lambda expr, value: expr.in_(value),
    "nin": lambda expr, value: expr.not_in(value),
    "pr": lambda expr, _value: expr.is_not(None),
    "np": lambda expr, _value: expr.is_(None),
}


def _column(spec: FieldSpec) -> ColumnElement[Any]:
    return SessionRecord.__table__.c[spec.column]


def _column_condition(spec: FieldSpec, row: FilterRow) -> _Cond:
    return _SQL_OPS[row.op](_column(spec), row.value)


def _one_agent(entry: Mapping[str, Any]) -> _Cond:
    condition = SessionRecord.agent_id == entry["agent_id"]
    if "versions" not in entry:
        return condition
    return and_(condition, SessionRecord.agent_version.in_(entry["versions"]))


def _agent_condition(spec: FieldSpec, row: FilterRow) -> _Cond:
    return or_(false(), *(_one_agent(entry) for entry in row.value))


def _overlap_condition(spec: FieldSpec, row: FilterRow) -> _Cond:
    # `&&` on text[] is served by the GIN index on transfer_agent_ids.
    return _column(spec).overlap(list(row.value))


def _keyed_type(op: str, value: Any) -> str:
    if op in ("sw", "ew", "co"):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "string" if isinstance(value, str) else "number"


def _typed_entry(column: ColumnElement[Any], key: str, json_type: str) -> ColumnElement[Any]:
    """The entry as a SQL value when it has `json_type`, else NULL (so nothing matches).

    CASE, not AND: SQL does not promise to evaluate an AND left to right, and casting a
    non-number to numeric would fail the whole query. The key is always a bound parameter.
    """
    is_type = func.jsonb_typeof(column[key]) == json_type
    as_text = column[key].astext
    sql_types = {"string": None, "number": Numeric(), "boolean": Boolean()}
    sql_type = sql_types[json_type]
    entry = as_text if sql_type is None else cast(as_text, sql_type)
    return case((is_type, entry), else_=None)


def _json_presence(column: ColumnElement[Any], key: str) -> ColumnElement[str]:
    # Absent key -> SQL NULL -> 'null', same as a JSON null.
    return func.coalesce(func.jsonb_typeof(column[key]), "null")


def _keyed_condition(spec: FieldSpec, row: FilterRow) -> _Cond:
    column, key = _column(spec), str(row.key)
    if row.op == "pr":
        return _json_presence(column, key) != "null"
    if row.op == "np":
        return _json_presence(column, key) == "null"
    json_type = _keyed_type(row.op, row.value)
    value = row.value
    if json_type == "number":
        value = [_as_decimal(v) for v in value] if row.op == "bt" else _as_decimal(value)
    condition = _SQL_OPS[row.op](_typed_entry(column, key, json_type), value)
    if row.op == "eq":
        # Containment is what a GIN (jsonb_path_ops) index on the column can answer.
        condition = and_(column.contains({key: row.value}), condition)
    return condition


_BUILDERS: dict[str, Callable[[FieldSpec, FilterRow], _Cond]] = {
    "column": _column_condition,
    "agent": _agent_condition,
    "overlap": _overlap_condition,
    "keyed": _keyed_condition,
}


def _row_condition(kind: str, index: int, row: FilterRow) -> _Cond:
    spec = FIELDS.get(row.field)
    # Rows normally come from parse_filters; this guards rows built by hand for another kind.
    if spec is None or kind not in spec.kinds or row.op not in spec.ops:
        raise InvalidFilter(index, f"field {row.field!r} with op {row.op!r} is not valid "
                                   f"for {kind} sessions")
    return _BUILDERS[spec.builder](spec, row)


def compile_filters(kind: str, rows: list[FilterRow]) -> _Cond:
    """AND of the rows' conditions on `sessions` (workspace and kind are not included)."""
    _check_kind(kind)
    return and_(true(), *(_row_condition(kind, i, row) for i, row in enumerate(rows)))


def matching_sessions(workspace_id: str, kind: str, rows: list[FilterRow]) -> Select[Any]:
    """SELECT session_id of the workspace's sessions of this kind that match every row."""
    return select(SessionRecord.session_id).where(
        SessionRecord.workspace_id == workspace_id,
        SessionRecord.kind == kind,
        compile_filters(kind, rows),
    )


__all__ = [
    "FIELDS", "FieldSpec", "FilterRow", "compile_filters", "matching_sessions", "parse_filters",
]
