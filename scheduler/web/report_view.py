"""A change report (the JSON contract of DESIGN.md "Safe to apply") arranged for display.

The HTML page, the console's job page and the terminal tables all show the same numbers the
same way, so the arithmetic (shares, heat shades, number formats, how a JSON value reads)
is done once here and the templates only lay it out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from scheduler.web.colour import heat_colour, readable_text

SESSION_LABELS: Final[tuple[tuple[str, str], ...]] = (
    ("analysed", "analysed"),
    ("changed", "changed"),
    ("unchanged", "unchanged"),
    ("without_before", "without before"),
)
NO_VALUE: Final = "—"


@dataclass(frozen=True)
class SessionCount:
    key: str
    label: str
    count: int


@dataclass(frozen=True)
class FieldRow:
    name: str
    type: str
    changed: int
    before_present: int
    after_present: int
    share: float
    """Changed sessions over compared sessions, 0..1."""

    @property
    def percent(self) -> str:
        # A handful of changes among a million sessions must not read as "0%".
        if 0 < self.share < 0.01:
            return "<1%"
        return f"{self.share * 100:.0f}%"

    @property
    def bar_width(self) -> str:
        return f"{self.share * 100:.1f}%"


@dataclass(frozen=True)
class NumberRow:
    name: str
    before_mean: str
    after_mean: str


@dataclass(frozen=True)
class HeatCell:
    before: str
    after: str
    count: int
    background: str
    color: str


@dataclass(frozen=True)
class HeatRow:
    before: str
    cells: tuple[HeatCell, ...]


@dataclass(frozen=True)
class Heatmap:
    field: str
    type: str
    columns: tuple[str, ...]
    rows: tuple[HeatRow, ...]


@dataclass(frozen=True)
class ShownValue:
    """A JSON value as read by a person: strings as written, other values as JSON."""

    text: str
    kind: Literal["text", "json", "null"]


@dataclass(frozen=True)
class ExampleRow:
    session_id: str
    field: str
    before: ShownValue
    after: ShownValue


@dataclass(frozen=True)
class ReportView:
    job_id: str
    trial: bool
    sessions: tuple[SessionCount, ...]
    compared: int
    """Sessions whose run recorded a before: the ones `fields` is computed over."""
    without_before: int
    fields: tuple[FieldRow, ...]
    numbers: tuple[NumberRow, ...]
    heatmaps: tuple[Heatmap, ...]
    examples: tuple[ExampleRow, ...]
    generated_at: str | None


def format_number(value: float | None) -> str:
    """A mean for reading: thousands separated, at most three decimals, a dash for none."""
    if value is None:
        return NO_VALUE
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def shown_value(value: Any) -> ShownValue:
    if value is None:
        return ShownValue("null", "null")
    if isinstance(value, str):
        return ShownValue(value, "text")
    return ShownValue(json.dumps(value, ensure_ascii=False), "json")


def ordered_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """Matrix keys in reading order: values by name, "null" (no value) last."""
    return tuple(sorted(set(keys), key=lambda key: (key == "null", key)))


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _field_row(name: str, entry: Mapping[str, Any], compared: int) -> FieldRow:
    return FieldRow(name=name, type=entry["type"], changed=entry["changed"],
                    before_present=entry["before_present"],
                    after_present=entry["after_present"],
                    share=_share(entry["changed"], compared))


def _heat_row(before: str, counts: Mapping[str, int], columns: tuple[str, ...]) -> HeatRow:
    # Shaded against the row's largest cell: each row reads as "where did sessions that were
    # BEFORE end up", whatever the row's size.
    row_max = max(counts.values(), default=0)
    cells = []
    for after in columns:
        count = counts.get(after, 0)
        background = heat_colour(_share(count, row_max))
        cells.append(HeatCell(before, after, count, background, readable_text(background)))
    return HeatRow(before, tuple(cells))


def heatmap(name: str, entry: Mapping[str, Any]) -> Heatmap:
    matrix: Mapping[str, Mapping[str, int]] = entry["matrix"]
    columns = ordered_keys(after for row in matrix.values() for after in row)
    rows = tuple(_heat_row(before, matrix[before], columns) for before in ordered_keys(matrix))
    return Heatmap(name, entry["type"], columns, rows)


def _example(example: Mapping[str, Any]) -> ExampleRow:
    return ExampleRow(session_id=example["session_id"], field=example["field"],
                      before=shown_value(example["before"]),
                      after=shown_value(example["after"]))


def report_view(report: Mapping[str, Any], *, generated_at: str | None = None) -> ReportView:
    """The display form of `report`, a change report as the API and CLI return it."""
    sessions = report["sessions"]
    compared = sessions["analysed"] - sessions["without_before"]
    fields: Mapping[str, Mapping[str, Any]] = report["fields"]
    return ReportView(
        job_id=str(report["job_id"]),
        trial=bool(report["trial"]),
        sessions=tuple(SessionCount(key, label, sessions[key]) for key, label in SESSION_LABELS),
        compared=compared,
        without_before=sessions["without_before"],
        fields=tuple(_field_row(name, entry, compared) for name, entry in fields.items()),
        numbers=tuple(
            NumberRow(name, format_number(entry["before_mean"]),
                      format_number(entry["after_mean"]))
            for name, entry in fields.items() if entry["type"] == "number"
        ),
        heatmaps=tuple(heatmap(name, entry) for name, entry in fields.items()
                       if "matrix" in entry),
        examples=tuple(_example(example) for example in report["examples"]),
        generated_at=generated_at,
    )
