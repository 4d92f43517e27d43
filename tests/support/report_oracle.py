"""The change report of DESIGN.md "Safe to apply" in plain Python: the oracle the SQL report is
held against, so every rule is spelled out here once and nothing is left to a database's habits.

Rules, in the order the code applies them:

- One run per session; a session id seen twice is the caller's bug (the SQL picks the one
  succeeded run of each item) and raises `ValueError`.
- `sessions.analysed` counts every run; `without_before` counts runs with no recorded before
  (history older than the feature). Those runs are left out of `fields` and of
  changed/unchanged, so `unchanged = analysed - changed - without_before`.
- Fields: the three built-ins (`<kind>_summary` string, `<kind>_successful` boolean,
  `user_sentiment` enum), then `custom_analysis_data.<name>` for every key of a before's or an
  after's `custom_analysis_data`, a key holding null included (the worker writes every
  configured field, null when it was not extracted, and such a field belongs in the report),
  sorted by name in code-point order.
- A field's value in an analysis: absent and null are the same value (None); a
  `custom_analysis_data` that is absent, null or not an object holds no fields.
- `changed`: JSON equality, not Python equality: `1 == 1.0`, but `true != 1`, and strings,
  lists and objects compare by JSON type and content.
- `*_present`: values that are not null.
- A session is changed when at least one of these fields changed; other keys of an analysis
  object are not report fields and do not count.
- A custom field's type: the type the compared runs' recorded field types give it (the most
  frequent one if runs disagree, an agent edited mid-job; ties broken by type name); where no
  run records it (a field of an older configuration, only in befores), the JSON type of its
  non-null values: all booleans -> boolean, all numbers -> number, anything else (mixed,
  strings, no value at all) -> string.
- `matrix` (boolean and enum entries): over every compared session, `{before: {after: n}}`;
  keys are null -> "null", a string as itself, anything else its JSON text.
- `before_mean` / `after_mean` (number entries): the float mean of the present values that
  are numbers (a string left by an older configuration has no mean), None if there are none.
- `examples`: per changed field, its first 5 changed sessions by session id; the list is
  ordered by field name, then session id.

Every order here is code-point order of the strings (Python's `sorted`); in Postgres that
is `COLLATE "C"`, not the database's default collation.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

CUSTOM_KEY: Final = "custom_analysis_data"
CUSTOM_PREFIX: Final = f"{CUSTOM_KEY}."
KINDS: Final[tuple[str, ...]] = ("call", "chat")
EXAMPLES_PER_FIELD: Final = 5
MATRIX_TYPES: Final = frozenset({"boolean", "enum"})


@dataclass(frozen=True)
class RunRecord:
    """One succeeded item's run: the analysis it replaced (None: not recorded) and wrote."""

    session_id: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    field_types: dict[str, str]


@dataclass(frozen=True)
class _Pair:
    """One field of one compared session."""

    session_id: str
    before: Any
    after: Any

    @property
    def changed(self) -> bool:
        return not json_equal(self.before, self.after)


def builtin_fields(kind: str) -> dict[str, str]:
    """The built-in fields of a session kind with their types, in report order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {f"{kind}_summary": "string", f"{kind}_successful": "boolean", "user_sentiment": "enum"}


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; in JSON it is its own type.
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values as JSON defines it (and Postgres jsonb compares)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) or _is_number(b):
        return _is_number(a) and _is_number(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[key], b[key]) for key in a)
    return type(a) is type(b) and a == b


def _custom(analysis: Mapping[str, Any]) -> Mapping[str, Any]:
    custom = analysis.get(CUSTOM_KEY)
    return custom if isinstance(custom, dict) else {}


def value_of(analysis: Mapping[str, Any], field: str) -> Any:
    """A report field's value in one analysis; None when absent."""
    if field.startswith(CUSTOM_PREFIX):
        return _custom(analysis).get(field.removeprefix(CUSTOM_PREFIX))
    return analysis.get(field)


def _unique_by_session(runs: Iterable[RunRecord]) -> list[RunRecord]:
    records = sorted(runs, key=lambda run: run.session_id)
    for first, second in zip(records, records[1:], strict=False):
        if first.session_id == second.session_id:
            raise ValueError(f"session {first.session_id!r} has more than one run")
    return records


def _custom_names(compared: Sequence[RunRecord]) -> list[str]:
    names: set[str] = set()
    for run in compared:
        names |= _custom(run.before or {}).keys() | _custom(run.after).keys()
    return sorted(names)


def _inferred_type(values: Iterable[Any]) -> str:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "boolean"
    if present and all(_is_number(value) for value in present):
        return "number"
    return "string"


def _custom_type(name: str, pairs: Sequence[_Pair], compared: Sequence[RunRecord]) -> str:
    recorded = Counter(run.field_types[name] for run in compared if name in run.field_types)
    if recorded:
        return min(recorded.items(), key=lambda item: (-item[1], item[0]))[0]
    return _inferred_type(value for pair in pairs for value in (pair.before, pair.after))


def _pairs(field: str, compared: Sequence[RunRecord]) -> list[_Pair]:
    return [
        _Pair(run.session_id, value_of(run.before or {}, field), value_of(run.after, field))
        for run in compared
    ]


def matrix_key(value: Any) -> str:
    """A value as a matrix key: "null", a string as itself, else its JSON text."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _matrix(pairs: Sequence[_Pair]) -> dict[str, dict[str, int]]:
    counts = Counter((matrix_key(pair.before), matrix_key(pair.after)) for pair in pairs)
    matrix: dict[str, dict[str, int]] = {}
    for (before, after), count in sorted(counts.items()):
        matrix.setdefault(before, {})[after] = count
    return matrix


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(value) for value in values if _is_number(value)]
    # fsum: the correctly rounded sum, so the mean does not depend on the order of the runs.
    return math.fsum(numbers) / len(numbers) if numbers else None


def _field_entry(field_type: str, pairs: Sequence[_Pair]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": field_type,
        "changed": sum(pair.changed for pair in pairs),
        "before_present": sum(pair.before is not None for pair in pairs),
        "after_present": sum(pair.after is not None for pair in pairs),
    }
    if field_type in MATRIX_TYPES:
        entry["matrix"] = _matrix(pairs)
    if field_type == "number":
        entry["before_mean"] = _mean(pair.before for pair in pairs)
        entry["after_mean"] = _mean(pair.after for pair in pairs)
    return entry


def _examples(pairs_by_field: Mapping[str, Sequence[_Pair]]) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    for field in sorted(pairs_by_field):
        changed = [pair for pair in pairs_by_field[field] if pair.changed]
        examples += [
            {"session_id": p.session_id, "field": field, "before": p.before, "after": p.after}
            for p in changed[:EXAMPLES_PER_FIELD]
        ]
    return examples


def compute_report(
    job_id: str, trial: bool, kind: str, runs: Iterable[RunRecord]
) -> dict[str, Any]:
    """The change report of a job whose succeeded items wrote `runs`."""
    builtins = builtin_fields(kind)
    records = _unique_by_session(runs)
    compared = [run for run in records if run.before is not None]
    pairs = {field: _pairs(field, compared) for field in builtins}
    types = dict(builtins)
    for name in _custom_names(compared):
        field = f"{CUSTOM_PREFIX}{name}"
        pairs[field] = _pairs(field, compared)
        types[field] = _custom_type(name, pairs[field], compared)
    changed = {pair.session_id for field_pairs in pairs.values() for pair in field_pairs
               if pair.changed}
    return {
        "job_id": job_id,
        "trial": trial,
        "sessions": {
            "analysed": len(records),
            "changed": len(changed),
            "unchanged": len(compared) - len(changed),
            "without_before": len(records) - len(compared),
        },
        "fields": {field: _field_entry(types[field], pairs[field]) for field in types},
        "examples": _examples(pairs),
    }
