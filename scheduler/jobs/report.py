"""The change report of a job (DESIGN "Safe to apply"), computed in Postgres over the job's runs.

Each succeeded item of a job wrote one `analysis_runs` row holding the analysis it found
(`before`; null for runs older than the feature) and the one it produced (`result`). The report
compares the two field by field. Every number is an aggregate in SQL: a report of a million
runs reads them a few times and holds only its own result in memory.

1. the custom field names (the keys of the befores' and afters' `custom_analysis_data`) and the
   types the runs recorded for them (grouped by the runs' field types: a few groups);
2. one aggregate row for the session counts and every field's counts, with the means and the
   type evidence only where the field's type needs them, its columns generated per field (one
   row per run, no unpivot: the cheapest pass);
3. the matrices of the boolean and enum fields, the only grouping by value;
4. the examples: the first runs by session id, and among them the first five changes of each
   field (`row_number()`); a field whose five are not all there (it changes rarely) is looked
   up on its own.

The rules (absent = null, JSON equality, the type of a custom field, code-point order) are
those of `tests/support/report_oracle.py`, which a property test holds this module to. Field
names travel as bound parameters, never as SQL text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, text

from shared.analysis import CUSTOM_KEY
from shared.errors import NotFound
from shared.state.trials import IS_TRIAL_SQL
from shared.vocabulary import CUSTOM_FIELD_TYPES

CUSTOM_PREFIX: Final = f"{CUSTOM_KEY}."
EXAMPLES_PER_FIELD: Final = 5
MATRIX_TYPES: Final = frozenset({"boolean", "enum"})
# The first runs by session id read at once for the examples: five of every field that
# changes in at least one session in a few hundred are among them.
EXAMPLE_CANDIDATES: Final = 2000
# Fields per aggregate statement: each adds up to seven columns, and Postgres allows 1,664 in
# one row.
FIELDS_PER_STATEMENT: Final = 60

_JOB = text(f"""
    SELECT j.kind, {IS_TRIAL_SQL} AS trial FROM backfill_jobs AS j
     WHERE j.id = :job_id AND (CAST(:ws AS text) IS NULL OR j.workspace_id = CAST(:ws AS text))
""")

# For this transaction. JIT compiling the generated expressions costs seconds and saves less.
# The planner cannot estimate how many distinct values a boolean or enum field holds (the
# default of 200 per expression) and would sort a million rows to group them, where hashing
# a few dozen keys is right; with more memory allowed it hashes, and a hash aggregate that
# meets more keys than fit spills to disk, so memory stays bounded.
_PLANNER_SETTINGS = text("""
    SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)
""")

_RECORDED_TYPES = text("""
    SELECT field_types, count(*) AS runs FROM analysis_runs
     WHERE job_id = :job_id AND before IS NOT NULL
     GROUP BY field_types
""")

_CUSTOM_NAMES = text(f"""
    SELECT DISTINCT name FROM (
        SELECT jsonb_object_keys(r.before -> '{CUSTOM_KEY}') AS name FROM analysis_runs AS r
         WHERE r.job_id = :job_id AND jsonb_typeof(r.before -> '{CUSTOM_KEY}') = 'object'
        UNION ALL
        SELECT jsonb_object_keys(r.result -> '{CUSTOM_KEY}') FROM analysis_runs AS r
         WHERE r.job_id = :job_id AND r.before IS NOT NULL
           AND jsonb_typeof(r.result -> '{CUSTOM_KEY}') = 'object'
    ) AS names
""")


# --------------------------------------------------------------------------- fields


def recorded_types(tx: Connection, job_id: str) -> dict[str, Counter[str]]:
    """Per custom field, how many compared runs recorded each type: one pass grouped by the
    runs' field types (a job has a configuration or a few, so the groups are few)."""
    counts: dict[str, Counter[str]] = {}
    for row in tx.execute(_RECORDED_TYPES, {"job_id": job_id}):
        for name, kind in (row.field_types or {}).items():
            if kind in CUSTOM_FIELD_TYPES:
                counts.setdefault(name, Counter())[kind] += int(row.runs)
    return counts


@dataclass(frozen=True)
class ReportField:
    """One field of the report, and where its values are in the per-run rows (`_values`)."""

    key: str
    """The report's name: `call_summary`, …, `custom_analysis_data.<name>`."""
    index: int
    """Its name is bound as `:f<index>`; its values are columns `b<index>`, `a<index>`."""
    known_type: str | None
    """The built-ins' type, or the type most runs recorded for a custom field; None for a
    custom field no run recorded (an older configuration's): its values decide."""
    is_custom: bool = True

    @property
    def name(self) -> str:
        """The key inside the analysis object, or inside its custom data."""
        return self.key.removeprefix(CUSTOM_PREFIX) if self.is_custom else self.key

    @property
    def param(self) -> str:
        return f"f{self.index}"

    @property
    def before(self) -> str:
        return f"v.b{self.index}"

    @property
    def after(self) -> str:
        return f"v.a{self.index}"

    @property
    def differs(self) -> str:
        """JSON equality: jsonb compares numbers by value (1 = 1.0) and keeps types apart."""
        return f"({self.before} IS DISTINCT FROM {self.after})"

    def extractions(self) -> list[str]:
        """The columns of this field in `_values`: SQL NULL when the key is absent or holds
        JSON null (`->` on a custom data that is not an object, a malformed import, gives
        NULL too)."""
        name = f"CAST(:{self.param} AS text)"
        before, after = ("r.before_custom", "r.after_custom") if self.is_custom else (
            "r.before", "r.result")
        return [f"NULLIF({before} -> {name}, 'null'::jsonb) AS b{self.index}",
                f"NULLIF({after} -> {name}, 'null'::jsonb) AS a{self.index}"]


def most_recorded(counts: Mapping[str, int]) -> str | None:
    """The type most runs recorded, ties going to the first type name."""
    recorded = [(-count, kind) for kind, count in counts.items() if count]
    return min(recorded)[1] if recorded else None


def report_fields(kind: str, custom_names: Sequence[str],
                  recorded: Mapping[str, Mapping[str, int]]) -> list[ReportField]:
    """The built-ins, then every custom field in code-point order of its name. `recorded`:
    per custom field, how many compared runs recorded each type."""
    fields = [ReportField(f"{kind}_summary", 0, "string", is_custom=False),
              ReportField(f"{kind}_successful", 1, "boolean", is_custom=False),
              ReportField("user_sentiment", 2, "enum", is_custom=False)]
    fields += [ReportField(CUSTOM_PREFIX + name, len(fields) + offset,
                           most_recorded(recorded.get(name, {})))
               for offset, name in enumerate(sorted(custom_names))]
    return fields


_JOB_RUNS = "analysis_runs AS r WHERE r.job_id = :job_id"
# The first compared runs by session id in code-point order (`COLLATE "C"`, whatever the
# database's collation): where the examples are looked for first.
_FIRST_RUNS = """(SELECT * FROM analysis_runs AS r
                   WHERE r.job_id = :job_id AND r.before IS NOT NULL
                   ORDER BY r.session_id COLLATE "C" LIMIT :candidates) AS r"""


def _values(fields: Sequence[ReportField], runs: str = _JOB_RUNS) -> str:
    """A FROM item `v`: one row per run (of the job, or of `runs`), with `compared` (the run
    has a before) and each field's values, each read once (`OFFSET 0` keeps Postgres from
    inlining the subqueries, which would read a value again for every aggregate that uses
    it)."""
    columns = ", ".join(column for f in fields for column in f.extractions())
    return f"""(SELECT r.session_id, r.compared, {columns}
                  FROM (SELECT r.session_id, r.before IS NOT NULL AS compared, r.before,
                               r.result, r.before -> '{CUSTOM_KEY}' AS before_custom,
                               r.result -> '{CUSTOM_KEY}' AS after_custom
                          FROM {runs} OFFSET 0) AS r
                OFFSET 0) AS v"""


def _params(job_id: str, fields: Sequence[ReportField]) -> dict[str, Any]:
    return {"job_id": job_id} | {f.param: f.name for f in fields}


def _chunks(fields: Sequence[ReportField]) -> Iterator[Sequence[ReportField]]:
    for start in range(0, len(fields), FIELDS_PER_STATEMENT):
        yield fields[start:start + FIELDS_PER_STATEMENT]


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class FieldStats:
    """One field over the compared runs (those with a before)."""

    changed: int
    before_present: int
    after_present: int
    lowest_type: str | None = None
    highest_type: str | None = None
    """For a field of no recorded type: the least and the greatest JSON type name among the
    present values, both sides."""
    before_mean: float | None = None
    after_mean: float | None = None

    def inferred_type(self) -> str:
        """What the present values are: all booleans, all numbers, or string."""
        if self.lowest_type == self.highest_type and self.lowest_type in ("boolean", "number"):
            return self.lowest_type
        return "string"


def _compared(aggregate: str, condition: str | None = None) -> str:
    where = "v.compared" + ("" if condition is None else f" AND {condition}")
    return f"{aggregate} FILTER (WHERE {where})"


def _mean(value: str) -> str:
    number = (f"CASE WHEN jsonb_typeof({value}) = 'number' "
              f"THEN CAST({value} #>> '{{}}' AS numeric) END")
    # The exact mean of the decimals as stored, then the nearest double.
    return f"CAST({_compared(f'avg({number})')} AS float8)"


def _field_columns(f: ReportField) -> dict[str, str]:
    """Only what the field's type needs: a string or an enum has no means, and only a field
    of no recorded type needs the types of its values."""
    columns = {
        "changed": _compared("count(*)", f.differs),
        "before_present": _compared(f"count({f.before})"),
        "after_present": _compared(f"count({f.after})"),
    }
    if f.known_type is None:
        # LEAST and GREATEST skip NULLs: the type names of the present values on both sides.
        types = f"jsonb_typeof({f.before}), jsonb_typeof({f.after})"
        columns |= {"lowest_type": _compared(f"min(LEAST({types}))"),
                    "highest_type": _compared(f"max(GREATEST({types}))")}
    if f.known_type in (None, "number"):
        columns |= {"before_mean": _mean(f.before), "after_mean": _mean(f.after)}
    return columns


def _session_columns(fields: Sequence[ReportField]) -> dict[str, str]:
    any_change = " OR ".join(f.differs for f in fields)
    return {"analysed": "count(*)",
            "without_before": "count(*) FILTER (WHERE NOT v.compared)",
            "changed": _compared("count(*)", f"({any_change})")}


def _aggregate(tx: Connection, job_id: str, fields: Sequence[ReportField],
               columns: Mapping[str, str]) -> dict[str, Any]:
    """One pass over the job's runs; the labelled aggregates come back by label."""
    labels = list(columns)
    select = ",\n".join(f"{columns[label]} AS c{n}" for n, label in enumerate(labels))
    row = tx.execute(text(f"SELECT {select} FROM {_values(fields)}"),
                     _params(job_id, fields)).one()
    return {label: row[n] for n, label in enumerate(labels)}


def _stats_of(values: Mapping[str, Any]) -> FieldStats:
    return FieldStats(
        changed=values["changed"], before_present=values["before_present"],
        after_present=values["after_present"], lowest_type=values.get("lowest_type"),
        highest_type=values.get("highest_type"), before_mean=values.get("before_mean"),
        after_mean=values.get("after_mean"),
    )


def field_statistics(tx: Connection, job_id: str, fields: Sequence[ReportField]
                     ) -> tuple[dict[str, int], dict[str, FieldStats]]:
    """The session counts and each field's statistics, one pass per chunk of fields (the
    session counts, which need every field's difference, ride on the first)."""
    sessions: dict[str, int] = {}
    stats: dict[str, FieldStats] = {}
    for number, chunk in enumerate(_chunks(fields)):
        columns = {f"{f.index}:{label}": sql for f in chunk
                   for label, sql in _field_columns(f).items()}
        if number == 0:
            columns |= {f"sessions:{label}": sql
                        for label, sql in _session_columns(fields).items()}
        values = _aggregate(tx, job_id, fields if number == 0 else chunk, columns)
        sessions |= {label.removeprefix("sessions:"): int(value)
                     for label, value in values.items() if label.startswith("sessions:")}
        for f in chunk:
            prefix = f"{f.index}:"
            stats[f.key] = _stats_of({label.removeprefix(prefix): value
                                      for label, value in values.items()
                                      if label.startswith(prefix)})
    return sessions, stats


# --------------------------------------------------------------------------- matrices


def matrix_key(json_text: str | None) -> str:
    """A value as a matrix key, from its jsonb text: "null", a string as itself, anything else
    its JSON text."""
    if json_text is None:
        return "null"
    return str(json.loads(json_text)) if json_text.startswith('"') else json_text


def matrices(tx: Connection, job_id: str, fields: Sequence[ReportField]
             ) -> dict[str, dict[str, dict[str, int]]]:
    """`{field: {before: {after: sessions}}}` for these fields over every compared run, in one
    pass: one grouping set per field over the jsonb text of its two values (jsonb equality
    would merge 1 and 1.0, which are two keys)."""
    found: dict[str, dict[str, dict[str, int]]] = {f.key: {} for f in fields}
    if not fields:
        return found
    keys = ", ".join(f"CAST({f.before} AS text) AS kb{f.index}, "
                     f"CAST({f.after} AS text) AS ka{f.index}" for f in fields)
    sets = ", ".join(f"(k.kb{f.index}, k.ka{f.index})" for f in fields)
    # GROUPING() is 0 in the rows of the set it names (its keys are grouped there).
    columns = ", ".join(f"GROUPING(k.kb{f.index}, k.ka{f.index}) AS g{f.index}, "
                        f"k.kb{f.index}, k.ka{f.index}" for f in fields)
    statement = text(f"""
        SELECT {columns}, count(*) AS sessions
          FROM (SELECT {keys} FROM {_values(fields)} WHERE v.compared OFFSET 0) AS k
         GROUP BY GROUPING SETS ({sets})
    """)
    for row in tx.execute(statement, _params(job_id, fields)).mappings():
        f = next(f for f in fields if row[f"g{f.index}"] == 0)
        before, after = matrix_key(row[f"kb{f.index}"]), matrix_key(row[f"ka{f.index}"])
        found[f.key].setdefault(before, {})[after] = int(row["sessions"])
    return found


# --------------------------------------------------------------------------- examples


def _example(row: Any, f: ReportField) -> dict[str, Any]:
    return {"session_id": row.session_id, "field": f.key, "before": row.before_value,
            "after": row.after_value}


def _first_changes(tx: Connection, job_id: str, fields: Sequence[ReportField]
                   ) -> list[dict[str, Any]]:
    """The first five changes of each field among the first EXAMPLE_CANDIDATES compared
    runs by session id: only those runs' values are read."""
    pairs = ", ".join(f"({f.index}, {f.before}, {f.after})" for f in fields)
    statement = text(f"""
        SELECT e.field, e.session_id, e.before_value, e.after_value FROM (
            SELECT p.field, v.session_id, p.before_value, p.after_value,
                   row_number() OVER (PARTITION BY p.field
                                      ORDER BY v.session_id COLLATE "C") AS position
              FROM {_values(fields, _FIRST_RUNS)}
             CROSS JOIN LATERAL (VALUES {pairs}) AS p(field, before_value, after_value)
             WHERE p.before_value IS DISTINCT FROM p.after_value
        ) AS e
         WHERE e.position <= :per_field
    """)
    params = _params(job_id, fields) | {"candidates": EXAMPLE_CANDIDATES,
                                        "per_field": EXAMPLES_PER_FIELD}
    by_index = {f.index: f for f in fields}
    return [_example(row, by_index[row.field]) for row in tx.execute(statement, params)]


def _first_changes_of(tx: Connection, job_id: str, f: ReportField) -> list[dict[str, Any]]:
    """The first five changes of one field over all the job's runs."""
    statement = text(f"""
        SELECT v.session_id, {f.before} AS before_value, {f.after} AS after_value
          FROM {_values([f])}
         WHERE v.compared AND {f.differs}
         ORDER BY v.session_id COLLATE "C" LIMIT :per_field
    """)
    params = _params(job_id, [f]) | {"per_field": EXAMPLES_PER_FIELD}
    return [_example(row, f) for row in tx.execute(statement, params)]


def examples(tx: Connection, job_id: str, changed: Mapping[ReportField, int],
             compared: int) -> list[dict[str, Any]]:
    """Up to five sessions per changed field (its first by session id), ordered by field name,
    then session id. `changed` holds each field's count of changed sessions, `compared` the
    number of runs with a before."""
    fields = [f for f, count in changed.items() if count]
    if not fields:
        return []
    found = _first_changes(tx, job_id, fields)
    if compared > EXAMPLE_CANDIDATES:
        # Only the first runs were read: a field that changes rarely may have its first
        # changes past them, so it is looked up on its own.
        for f in fields:
            shown = sum(1 for example in found if example["field"] == f.key)
            if shown < min(EXAMPLES_PER_FIELD, changed[f]):
                found = [e for e in found if e["field"] != f.key]
                found += _first_changes_of(tx, job_id, f)
    return sorted(found, key=lambda e: (e["field"], e["session_id"]))


# --------------------------------------------------------------------------- the report


def _entry(field_type: str, stats: FieldStats,
           matrix: Mapping[str, dict[str, int]] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": field_type, "changed": stats.changed,
                             "before_present": stats.before_present,
                             "after_present": stats.after_present}
    if matrix is not None:
        entry["matrix"] = dict(matrix)
    if field_type == "number":
        entry["before_mean"] = stats.before_mean
        entry["after_mean"] = stats.after_mean
    return entry


def change_report(tx: Connection, job_id: str, workspace_id: str | None = None
                  ) -> dict[str, Any]:
    """The report JSON of DESIGN.md for one job (trial or applied); NotFound outside
    `workspace_id`."""
    job = tx.execute(_JOB, {"job_id": job_id, "ws": workspace_id}).one_or_none()
    if job is None:
        raise NotFound(f"no backfill job {job_id!r}")
    tx.execute(_PLANNER_SETTINGS)
    names = list(tx.execute(_CUSTOM_NAMES, {"job_id": job_id}).scalars())
    fields = report_fields(job.kind, names, recorded_types(tx, job_id))
    sessions, stats = field_statistics(tx, job_id, fields)
    types = {f.key: f.known_type or stats[f.key].inferred_type() for f in fields}
    cells = matrices(tx, job_id, [f for f in fields if types[f.key] in MATRIX_TYPES])
    compared = sessions["analysed"] - sessions["without_before"]
    return {
        "job_id": job_id,
        "trial": bool(job.trial),
        "sessions": {"analysed": sessions["analysed"], "changed": sessions["changed"],
                     "unchanged": compared - sessions["changed"],
                     "without_before": sessions["without_before"]},
        "fields": {f.key: _entry(types[f.key], stats[f.key], cells.get(f.key))
                   for f in fields},
        "examples": examples(tx, job_id, {f: stats[f.key].changed for f in fields},
                             compared),
    }
