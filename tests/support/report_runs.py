"""Hypothesis strategies for the runs of a job, the input of a change report.

The values come from small domains on purpose, so that befores and afters often agree and
matrices get repeated cells; they still cover what the report rules single out: absent and null
keys, `1` beside `1.0`, booleans beside numbers, runs without a before, and befores written by
an older configuration (other custom fields, or the same field with another type).
"""

from __future__ import annotations

from typing import Any, Final

from hypothesis import strategies as st

from shared.analysis import SENTIMENTS
from tests.support.report_oracle import CUSTOM_KEY, RunRecord

# Names with markup characters, so every renderer is exercised on text it must escape.
CUSTOM_FIELDS: Final[dict[str, str]] = {
    "callback": "boolean",
    "intent": "enum",
    "notes & <b>": "string",
    "score": "number",
}
INTENTS: Final[tuple[str, ...]] = ("buy", "cancel <now>", "support")
SUMMARIES: Final[tuple[str, ...]] = ("", "Booked a table.", "Asked for a refund & left.", "<i>")
FIELD_TYPES: Final[tuple[str, ...]] = ("string", "enum", "boolean", "number")

_numbers = st.sampled_from([0, 1, 1.0, 2, 2.5, -3])
_values: Final[dict[str, st.SearchStrategy[Any]]] = {
    "boolean": st.booleans(),
    "enum": st.sampled_from(INTENTS),
    "number": _numbers,
    "string": st.sampled_from(SUMMARIES) | st.text(alphabet="abc <>&\"'é", max_size=12),
}


def _value(field_type: str) -> st.SearchStrategy[Any]:
    return st.none() | _values[field_type]


def _builtins(kind: str) -> dict[str, st.SearchStrategy[Any]]:
    return {
        f"{kind}_summary": _value("string"),
        f"{kind}_successful": _value("boolean"),
        "user_sentiment": st.none() | st.sampled_from(SENTIMENTS),
    }


@st.composite
def _custom_data(draw: st.DrawFn, config: dict[str, str]) -> dict[str, Any]:
    # Every configured key may still be missing: imported analyses may lack keys.
    names = draw(st.lists(st.sampled_from(sorted(config)), unique=True)) if config else []
    return {name: draw(_value(config[name])) for name in names}


@st.composite
def analyses(draw: st.DrawFn, kind: str, config: dict[str, str]) -> dict[str, Any]:
    """One analysis object; built-in keys may be absent, custom data may be absent or null."""
    analysis = draw(st.fixed_dictionaries({}, optional=_builtins(kind)))
    custom = draw(st.sampled_from(["data", "data", "absent", "null"]))
    if custom == "data":
        analysis[CUSTOM_KEY] = draw(_custom_data(config))
    elif custom == "null":
        analysis[CUSTOM_KEY] = None
    return analysis


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, str]:
    """Custom fields with their types; a name may carry a type other than its usual one, as
    an older configuration of the same agent might have."""
    names = draw(st.lists(st.sampled_from(sorted(CUSTOM_FIELDS)), unique=True))
    retyped = st.sampled_from(FIELD_TYPES)
    return {name: draw(st.sampled_from([CUSTOM_FIELDS[name]]) | retyped) for name in names}


@st.composite
def run_records(draw: st.DrawFn, kind: str, max_size: int = 20) -> list[RunRecord]:
    """The runs of one job: unique sessions, mostly one configuration (an agent edited
    mid-job gives a run another), some befores from an older one, some without a before."""
    job_config = draw(configurations())
    session_ids = draw(st.lists(st.integers(0, 999), unique=True, max_size=max_size))
    runs = []
    for number in session_ids:
        config = draw(st.sampled_from([job_config]) | configurations())
        older = draw(st.sampled_from([config]) | configurations())
        recorded = draw(st.sampled_from([True, True, True, False]))
        before = draw(analyses(kind, older)) if recorded else None
        runs.append(RunRecord(f"s{number:03d}", before, draw(analyses(kind, config)), config))
    return runs
