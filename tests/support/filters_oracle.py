"""The filters' plain-Python reference evaluator: what each row means, written a second time
with no expression code shared with the SQL compiler (`scheduler.jobs.filters`), so the
property tests can hold the SQL against it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from scheduler.jobs.filters import PRESENCE_OPS, FilterRow

# Plain Python over a dict shaped like a `sessions` row.

_SESSION_KEYS = {
    "call_id": "session_id", "chat_id": "session_id",
    "call_status": "status", "chat_status": "status",
    "call_successful": "successful", "chat_successful": "successful",
}
_KEYED_FIELDS = frozenset({"custom_analysis_data", "metadata", "dynamic_variables"})

_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda actual, value: actual == value,
    "ne": lambda actual, value: actual != value,
    "gt": lambda actual, value: actual > value,
    "ge": lambda actual, value: actual >= value,
    "lt": lambda actual, value: actual < value,
    "le": lambda actual, value: actual <= value,
    "bt": lambda actual, value: value[0] <= actual <= value[1],
    "sw": lambda actual, value: actual.startswith(value),
    "ew": lambda actual, value: actual.endswith(value),
    "co": lambda actual, value: value in actual,
    "in": lambda actual, value: actual in value,
    "nin": lambda actual, value: actual not in value,
}


def _py_compare(op: str, actual: Any, value: Any) -> bool:
    if op == "pr":
        return actual is not None
    if op == "np":
        return actual is None
    return actual is not None and _PY_OPS[op](actual, value)


def _py_json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "other"


def _py_decimal(value: Any) -> Any:
    if isinstance(value, list):
        return [_py_decimal(item) for item in value]
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _py_keyed(row: FilterRow, data: Any) -> bool:
    actual = data.get(row.key) if isinstance(data, dict) else None
    if row.op in PRESENCE_OPS:
        return _py_compare(row.op, actual, None)
    wanted = "string" if row.op in ("sw", "ew", "co") else _py_json_kind(
        row.value[0] if row.op == "bt" else row.value
    )
    if _py_json_kind(actual) != wanted:
        return False
    if wanted == "number":
        return _py_compare(row.op, _py_decimal(actual), _py_decimal(row.value))
    return _py_compare(row.op, actual, row.value)


def _py_agent(row: FilterRow, session: Mapping[str, Any]) -> bool:
    return any(
        session.get("agent_id") == entry["agent_id"]
        and ("versions" not in entry or session.get("agent_version") in entry["versions"])
        for entry in row.value
    )


def _py_transfer(row: FilterRow, session: Mapping[str, Any]) -> bool:
    return bool(set(row.value) & set(session.get("transfer_agent_ids") or ()))


def evaluate_row(row: FilterRow, session: Mapping[str, Any]) -> bool:
    """Does this session (a dict shaped like a `sessions` row) match this row?"""
    if row.field == "agent":
        return _py_agent(row, session)
    if row.field == "transfer_agent":
        return _py_transfer(row, session)
    if row.field in _KEYED_FIELDS:
        return _py_keyed(row, session.get(row.field))
    return _py_compare(row.op, session.get(_SESSION_KEYS.get(row.field, row.field)), row.value)


def evaluate_filters(rows: list[FilterRow], session: Mapping[str, Any]) -> bool:
    """Does this session match every row?"""
    return all(evaluate_row(row, session) for row in rows)
