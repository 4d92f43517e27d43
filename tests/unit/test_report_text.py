"""The change report as terminal tables: the numbers of a known report land in their rows,
names that look like rich markup print as written, and generated reports always print."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from scheduler.web.report_text import BAR_EMPTY, BAR_FULL, print_report, text_bar
from scheduler.web.report_view import FieldRow
from tests.support.report_oracle import RunRecord, compute_report
from tests.support.report_runs import run_records

HYPOTHESIS = settings(database=None, deadline=None, max_examples=30)
MARKUP_NAME = "[bold]tier[/bold]"
MARKUP_VALUE = "[i]silver[/i]"
CELL_BORDER = re.compile("[│┃]")


def known_report(*, trial: bool) -> dict[str, Any]:
    def analysis(summary: str, successful: bool | None, score: float | None,
                 tier: str) -> dict[str, Any]:
        return {"call_summary": summary, "call_successful": successful,
                "user_sentiment": "Neutral",
                "custom_analysis_data": {"score": score, MARKUP_NAME: tier}}

    types = {"score": "number", MARKUP_NAME: "enum"}
    runs = [
        RunRecord("s1", analysis("Old one.", True, 1, "gold"),
                  analysis("New one.", False, 4, "gold"), types),
        RunRecord("s2", analysis("Same.", True, 3, "gold"),
                  analysis("Same.", True, 3, MARKUP_VALUE), types),
        RunRecord("s3", analysis("Same.", None, None, "gold"),
                  analysis("Same.", True, 8, "gold"), types),
        RunRecord("s4", analysis("Same.", True, 2, "gold"),
                  analysis("Same.", True, 2, "gold"), types),
        RunRecord("s5", None, analysis("Fresh.", True, 1, "gold"), types),
    ]
    return compute_report("job-77", trial, "call", runs)


def printed(report: dict[str, Any]) -> str:
    console = Console(record=True, width=100, color_system=None)
    print_report(report, console)
    return console.export_text()


def lines_of(text: str, start: str) -> list[list[str]]:
    """The cells of every table line (header or body) whose first cell is `start`."""
    rows = [[cell.strip() for cell in CELL_BORDER.split(line.strip("│┃ "))]
            for line in text.splitlines()]
    return [cells for cells in rows if cells[0] == start]


def line_of(text: str, start: str) -> list[str]:
    """The cells of the first table line whose first cell is `start`."""
    found = lines_of(text, start)
    assert found, f"no line starts with {start!r} in:\n{text}"
    return found[0]


def test_title_and_trial() -> None:
    assert printed(known_report(trial=True)).splitlines()[0] == "Change report job job-77 TRIAL"
    assert printed(known_report(trial=False)).splitlines()[0] == "Change report job job-77"


def test_session_counts() -> None:
    text = printed(known_report(trial=False))
    # analysed, changed, unchanged, without before
    assert line_of(text, "5") == ["5", "3", "1", "1"]


def test_field_rows() -> None:
    text = printed(known_report(trial=False))
    assert "Fields (changed of 4 compared)" in text
    assert line_of(text, "call_summary") == ["call_summary", "string", "1 (25%)",
                                             "███░░░░░░░", "4", "4"]
    assert line_of(text, "call_successful") == ["call_successful", "boolean", "2 (50%)",
                                                "█████░░░░░", "3", "4"]
    assert line_of(text, "user_sentiment") == ["user_sentiment", "enum", "0 (0%)",
                                               "░░░░░░░░░░", "4", "4"]
    assert line_of(text, "custom_analysis_data.score") == [
        "custom_analysis_data.score", "number", "2 (50%)", "█████░░░░░", "3", "4"]


def test_markup_like_names_and_values_print_as_written() -> None:
    text = printed(known_report(trial=False))
    name = f"custom_analysis_data.{MARKUP_NAME}"
    assert line_of(text, name)[1:] == ["enum", "1 (25%)", "███░░░░░░░", "4", "4"]
    tier = text[text.index(f"\n{name}\n"):]
    assert line_of(tier, "before ↓ after →") == ["before ↓ after →", MARKUP_VALUE, "gold"]
    examples = text[text.index("\nExamples"):]
    assert line_of(examples, name) == [name, "s2", "gold", MARKUP_VALUE]


def test_number_means() -> None:
    numbers = printed(known_report(trial=False)).split("\nNumbers")[1]
    assert line_of(numbers, "custom_analysis_data.score") == [
        "custom_analysis_data.score", "2", "4.25"]


def test_matrices() -> None:
    text = printed(known_report(trial=False))
    successful = text[text.index("\ncall_successful\n"):]
    assert line_of(successful, "before ↓ after →") == ["before ↓ after →", "false", "true"]
    assert line_of(successful, "true") == ["true", "1", "2"]
    assert line_of(successful, "null") == ["null", "0", "1"]
    tier = text[text.index(f"\ncustom_analysis_data.{MARKUP_NAME}\n"):]
    assert line_of(tier, "gold") == ["gold", "1", "3"]


def test_examples() -> None:
    text = printed(known_report(trial=False))
    examples = text[text.index("\nExamples"):]
    assert line_of(examples, "call_summary") == ["call_summary", "s1", "Old one.", "New one."]
    assert lines_of(examples, "call_successful") == [
        ["call_successful", "s1", "true", "false"], ["call_successful", "s3", "null", "true"]]
    assert lines_of(examples, "custom_analysis_data.score") == [
        ["custom_analysis_data.score", "s1", "1", "4"],
        ["custom_analysis_data.score", "s3", "null", "8"]]


def test_no_change_says_so() -> None:
    runs = [RunRecord("s1", {"call_summary": "a"}, {"call_summary": "a"}, {})]
    text = printed(compute_report("job-1", False, "call", runs))
    assert "No field changed." in text
    assert "Examples" not in text


@pytest.mark.parametrize(("share", "changed", "bar"), [
    (0.0, 0, BAR_EMPTY * 10),
    (0.001, 1, BAR_FULL + BAR_EMPTY * 9),
    (0.5, 5, BAR_FULL * 5 + BAR_EMPTY * 5),
    (1.0, 9, BAR_FULL * 10),
])
def test_text_bar(share: float, changed: int, bar: str) -> None:
    row = FieldRow("f", "string", changed, 0, 0, share)
    assert text_bar(row) == bar


@HYPOTHESIS
@given(kind=st.sampled_from(["call", "chat"]), data=st.data())
def test_generated_reports_print_their_session_counts(kind: str, data: st.DataObject) -> None:
    report = compute_report("job-3", False, kind, data.draw(run_records(kind)))
    text = printed(report)
    sessions = report["sessions"]
    counts = [str(sessions[key]) for key in ("analysed", "changed", "unchanged",
                                             "without_before")]
    assert line_of(text, counts[0]) == counts
    assert f"{kind}_summary" in text
