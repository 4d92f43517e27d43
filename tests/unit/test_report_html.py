"""The change report page: reports from the oracle over generated runs, rendered and parsed
back, must show every number of the report in its place, stay self-contained, escape what
customers and LLMs wrote, and keep text readable."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import UndefinedError

from scheduler.web import template_environment
from scheduler.web.colour import contrast_ratio, heat_colour, readable_text
from scheduler.web.report_html import render_report_body, render_report_html
from scheduler.web.report_view import format_number, heatmap, ordered_keys, report_view
from tests.support.html_tree import Element, parse_html
from tests.support.report_oracle import RunRecord, compute_report
from tests.support.report_runs import run_records

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "scheduler" / "web" / "templates"
HYPOTHESIS = settings(database=None, deadline=None, max_examples=40)
# Anything that would make the page fetch something, or run code.
FORBIDDEN = ("<script", "<link", "@import", "url(", "http", "<iframe", "<img", "<object")
XSS = "<script>alert(1)</script>"
STYLE = re.compile(r"background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})")


def hand_report(*, trial: bool = False, summary: str = "Booked.") -> dict[str, Any]:
    before = {"call_summary": summary, "call_successful": True, "user_sentiment": "Positive",
              "custom_analysis_data": {"score": 2, "intent": "buy"}}
    after = {"call_summary": "Cancelled.", "call_successful": False,
             "user_sentiment": "Negative", "custom_analysis_data": {"score": 5, "intent": None}}
    types = {"score": "number", "intent": "enum"}
    runs = [RunRecord("s1", before, after, types), RunRecord("s2", before, before, types),
            RunRecord("s3", None, after, types)]
    return compute_report("job-42", trial, "call", runs)


def page(report: dict[str, Any]) -> Element:
    document = parse_html(render_report_html(report, generated_at="2025-06-01 03:00 UTC"))
    assert document.errors == ()
    return document.root


def assert_sessions(root: Element, report: dict[str, Any]) -> None:
    for key, count in report["sessions"].items():
        stat = root.find("li", data_sessions=key)
        assert stat.find("span").text() == str(count)


def assert_fields(root: Element, report: dict[str, Any]) -> None:
    compared = report["sessions"]["analysed"] - report["sessions"]["without_before"]
    rows = [row for row in root.find_all("tr") if "data-field" in row.attrs]
    assert [row.attrs["data-field"] for row in rows] == list(report["fields"])
    for row, (name, entry) in zip(rows, report["fields"].items(), strict=True):
        assert row.find("th").text() == name
        assert row.find("td", data_col="changed").find("span", data_value=None).text() == str(
            entry["changed"])
        assert row.find("td", data_col="before_present").text() == str(entry["before_present"])
        assert row.find("td", data_col="after_present").text() == str(entry["after_present"])
        share = entry["changed"] / compared * 100 if compared else 0.0
        bar = row.find("td", data_col="changed").find("div").find("span")
        assert bar.attrs["style"] == f"width:{share:.1f}%"


def assert_matrices(root: Element, report: dict[str, Any]) -> None:
    matrices = {name: entry["matrix"] for name, entry in report["fields"].items()
                if "matrix" in entry}
    assert {table.attrs["data-matrix"] for table in root.find_all("table")
            if "data-matrix" in table.attrs} == set(matrices)
    for name, matrix in matrices.items():
        table = root.find("table", data_matrix=name)
        columns = ordered_keys(after for row in matrix.values() for after in row)
        # Header text is read as a browser shows it: whitespace runs collapsed.
        shown = [" ".join(column.split()) for column in columns]
        assert [th.text() for th in table.find("thead").find_all("th")][1:] == shown
        cells = table.find("tbody").find_all("td")
        assert len(cells) == len(matrix) * len(columns)
        for cell in cells:
            count = matrix[cell.attrs["data-before"]].get(cell.attrs["data-after"], 0)
            assert cell.text() == str(count)


def assert_numbers(root: Element, report: dict[str, Any]) -> None:
    numbers = {name: entry for name, entry in report["fields"].items()
               if entry["type"] == "number"}
    rows = [row for row in root.find_all("tr") if "data-number-field" in row.attrs]
    assert [row.attrs["data-number-field"] for row in rows] == list(numbers)
    for row in rows:
        entry = numbers[row.attrs["data-number-field"]]
        assert row.find("td", data_col="before_mean").text() == format_number(
            entry["before_mean"])
        assert row.find("td", data_col="after_mean").text() == format_number(entry["after_mean"])


def assert_examples(root: Element, report: dict[str, Any]) -> None:
    shown = root.find_all("li", data_example=None)
    assert [(item.attrs["data-field"], item.attrs["data-session"]) for item in shown] == [
        (example["field"], example["session_id"]) for example in report["examples"]]
    for item, example in zip(shown, report["examples"], strict=True):
        for side in ("before", "after"):
            value = item.find("div", data_side=side).find("p")
            expected = example[side]
            if expected is None:
                assert "cr-null" in value.classes()
            elif isinstance(expected, str):
                assert value.text() == " ".join(expected.split())


@HYPOTHESIS
@given(kind=st.sampled_from(["call", "chat"]), trial=st.booleans(), data=st.data())
def test_page_shows_every_number_of_the_report(kind: str, trial: bool,
                                               data: st.DataObject) -> None:
    report = compute_report("job-7", trial, kind, data.draw(run_records(kind)))
    root = page(report)
    assert_sessions(root, report)
    assert_fields(root, report)
    assert_matrices(root, report)
    assert_numbers(root, report)
    assert_examples(root, report)
    assert bool(root.find_all(data_badge="trial")) is trial


@HYPOTHESIS
@given(kind=st.sampled_from(["call", "chat"]), data=st.data())
def test_page_is_self_contained(kind: str, data: st.DataObject) -> None:
    markup = render_report_html(compute_report("job-7", True, kind, data.draw(run_records(kind))))
    lowered = markup.lower()
    assert [needle for needle in FORBIDDEN if needle in lowered] == []
    root = parse_html(markup).root
    assert {element.tag for element in root.iter()} >= {"html", "head", "body", "style"}
    assert all(element.tag != "script" for element in root.iter())


def test_page_has_a_viewport_and_a_title() -> None:
    root = page(hand_report(trial=True))
    viewport = root.find("meta", name="viewport")
    assert "width=device-width" in (viewport.attrs["content"] or "")
    assert root.find("html").attrs["lang"] == "en"
    assert root.find("title").text() == "Change report · job job-42 (trial)"
    heading = root.find("h1")
    assert "job job-42" in heading.text()
    assert heading.find("span", data_badge="trial").text() == "trial"


def test_applied_job_has_no_trial_badge() -> None:
    root = page(hand_report(trial=False))
    assert root.find_all(data_badge="trial") == []
    assert "(trial)" not in root.find("title").text()


def test_generated_at_is_shown() -> None:
    assert "Generated 2025-06-01 03:00 UTC." in page(hand_report()).find("header").text()


def test_summary_markup_is_escaped() -> None:
    report = hand_report(summary=XSS)
    markup = render_report_html(report)
    assert XSS not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    root = parse_html(markup).root
    assert all(element.tag != "script" for element in root.iter())
    before = root.find("li", data_field="call_summary", data_session="s1").find(
        "div", data_side="before")
    assert before.find("p").text() == XSS


def test_markup_in_field_names_and_values_is_escaped_in_attributes_too() -> None:
    name = '"><img src=x onerror=alert(1)>'
    runs = [RunRecord("s1", {"custom_analysis_data": {name: "a"}},
                      {"custom_analysis_data": {name: "<b>"}}, {name: "enum"})]
    report = compute_report("job-1", False, "call", runs)
    document = parse_html(render_report_html(report))
    assert document.errors == ()
    assert all(element.tag not in {"img", "b"} for element in document.root.iter())
    field = f"custom_analysis_data.{name}"
    assert document.root.find("tr", data_field=field).find("th").text() == field
    cell = document.root.find("table", data_matrix=field).find("td", data_after="<b>")
    assert cell.text() == "1"


def test_numbers_and_null_examples_in_a_hand_report() -> None:
    root = page(hand_report())
    score = root.find("tr", data_number_field="custom_analysis_data.score")
    assert score.find("td", data_col="before_mean").text() == "2"
    assert score.find("td", data_col="after_mean").text() == "3.5"
    intent = root.find("li", data_field="custom_analysis_data.intent", data_session="s1")
    assert intent.find("div", data_side="after").find("p").text() == "null"
    assert "cr-null" in intent.find("div", data_side="after").find("p").classes()
    assert root.find("li", data_sessions="without_before").find("span").text() == "1"
    assert "left out of every comparison" in root.text()


def test_every_table_scrolls_inside_its_own_container() -> None:
    root = page(hand_report())
    tables = root.find_all("table")
    assert len(tables) == 5  # fields, numbers, three matrices
    scrolling = [box for box in root.iter() if "cr-scroll" in box.classes()]
    inside = {id(table) for box in scrolling for table in box.find_all("table")}
    assert inside == {id(table) for table in tables}
    assert ".cr-scroll { max-width: 100%; overflow-x: auto;" in render_report_html(hand_report())


def test_heat_cells_keep_text_readable() -> None:
    afters = ["Positive"] * 5 + ["Negative"] * 12 + ["Neutral"] + ["Unknown"] * 22
    runs = [RunRecord(f"s{i:02d}", {"user_sentiment": "Positive"}, {"user_sentiment": after}, {})
            for i, after in enumerate(afters)]
    markup = render_report_html(compute_report("job-1", False, "call", runs))
    styles = STYLE.findall(markup)
    assert len(styles) >= 4
    assert len({background for background, _ in styles}) >= 3
    for background, text in styles:
        assert contrast_ratio(background, text) >= 4.5


def test_heat_shades_each_row_against_its_largest_cell() -> None:
    entry = {"type": "enum", "matrix": {"a": {"a": 4, "b": 2}, "c": {"a": 1}}}
    rows = {row.before: {cell.after: (cell.count, cell.background) for cell in row.cells}
            for row in heatmap("f", entry).rows}
    assert rows == {
        "a": {"a": (4, heat_colour(1.0)), "b": (2, heat_colour(0.5))},
        "c": {"a": (1, heat_colour(1.0)), "b": (0, heat_colour(0.0))},
    }


@pytest.mark.parametrize(("value", "shown"), [
    (None, "—"), (2.0, "2"), (1234.5678, "1,234.568"), (0.1, "0.1"), (-0.0001, "0"), (-2.5, "-2.5"),
])
def test_means_read_plainly(value: float | None, shown: str) -> None:
    assert format_number(value) == shown


def test_matrix_keys_read_values_first_and_no_value_last() -> None:
    assert ordered_keys(["true", "null", "false", "true"]) == ("false", "true", "null")
    assert ordered_keys(["Unknown", "null", "Negative"]) == ("Negative", "Unknown", "null")


@pytest.mark.parametrize("step", range(101))
def test_heat_scale_is_readable_everywhere(step: int) -> None:
    background = heat_colour(step / 100)
    assert contrast_ratio(background, readable_text(background)) >= 4.5


def test_heat_scale_ends_and_text_choice() -> None:
    assert readable_text(heat_colour(0.0)) == "#000000"
    assert readable_text(heat_colour(1.0)) == "#ffffff"
    assert heat_colour(-1) == heat_colour(0) != heat_colour(0.5) != heat_colour(1) == heat_colour(2)
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)


def test_the_partial_renders_alone() -> None:
    report = hand_report(trial=True)
    document = parse_html(render_report_body(report))
    assert document.errors == ()
    top = [child for child in document.root.children if isinstance(child, Element)]
    assert [(element.tag, element.classes()) for element in top] == [("section", {"cr"})]
    assert {"html", "head", "body", "h1"}.isdisjoint(e.tag for e in document.root.iter())
    assert document.root.find("h2").find("span", data_badge="trial").text() == "trial"
    assert_fields(document.root, report)
    assert_matrices(document.root, report)


def test_a_host_layout_includes_the_partial_with_its_own_heading_level() -> None:
    environment = template_environment()
    host = environment.from_string(
        '<main>{% set title_tag = "h3" %}{% include "partials/report_body.html" %}</main>')
    root = parse_html(host.render(view=report_view(hand_report()))).root
    titles = [element for element in root.iter() if element.tag == "h3"
              and element.text().startswith("Change report")]
    assert len(titles) == 1
    assert all(element.tag not in {"h1", "h2"} for element in root.iter())


def test_the_partial_refuses_a_missing_view() -> None:
    with pytest.raises(UndefinedError):
        template_environment().get_template("partials/report_body.html").render()


def test_every_template_ships_with_the_package() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["scheduler"]
    templates = [path.relative_to(REPO / "scheduler").as_posix()
                 for path in TEMPLATES.rglob("*") if path.is_file()]
    assert {"web/templates/report.html", "web/templates/partials/report_body.html"} <= set(
        templates)
    unshipped = [path for path in templates
                 if not any(fnmatch.fnmatch(path, pattern) for pattern in package_data)]
    assert unshipped == []
