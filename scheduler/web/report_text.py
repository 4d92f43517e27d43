"""The change report as terminal tables (`backfill report JOB` without `--json`).

The same view as the HTML page, so both say the same thing. Every value that came from a
customer or an LLM (field names, enum values, examples) goes in as `Text`, never as a string:
rich would read `[bold]` in a string as markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from scheduler.web.report_view import FieldRow, Heatmap, ReportView, ShownValue, report_view

BAR_WIDTH: Final = 10
BAR_FULL: Final = "█"
BAR_EMPTY: Final = "░"
VALUE_STYLES: Final[Mapping[str, str]] = {"text": "", "json": "cyan", "null": "italic dim"}


def text_bar(row: FieldRow, width: int = BAR_WIDTH) -> str:
    """`row.share` as a bar of `width` cells, halves rounded up; any change shows at least
    one full cell."""
    full = math.floor(row.share * width + 0.5)
    if row.changed and not full:
        full = 1
    return BAR_FULL * full + BAR_EMPTY * (width - full)


def _title(view: ReportView) -> Text:
    title = Text.assemble(("Change report ", "bold"), f"job {view.job_id}")
    if view.trial:
        title.append(" TRIAL", style="bold black on yellow")
    return title


def _sessions_table(view: ReportView) -> Table:
    table = Table(title="Sessions", title_justify="left")
    for item in view.sessions:
        table.add_column(item.label, justify="right")
    table.add_row(*(str(item.count) for item in view.sessions))
    return table


def _fields_table(view: ReportView) -> Table:
    table = Table(title=f"Fields (changed of {view.compared} compared)", title_justify="left")
    table.add_column("field", overflow="fold")
    table.add_column("type")
    table.add_column("changed", justify="right")
    table.add_column("", no_wrap=True)
    # Two-line headers leave the width to the field names, which are what a reader scans.
    table.add_column("before\npresent", justify="right")
    table.add_column("after\npresent", justify="right")
    for row in view.fields:
        table.add_row(Text(row.name), row.type, f"{row.changed} ({row.percent})",
                      text_bar(row), str(row.before_present), str(row.after_present))
    return table


def _numbers_table(view: ReportView) -> Table:
    table = Table(title="Numbers (means over present values)", title_justify="left")
    table.add_column("field", overflow="fold")
    table.add_column("before mean", justify="right")
    table.add_column("after mean", justify="right")
    for row in view.numbers:
        table.add_row(Text(row.name), row.before_mean, row.after_mean)
    return table


def _matrix_table(heatmap: Heatmap) -> Table:
    # The field name goes above the table rather than in its title: a title is wrapped to
    # the table's width, and a matrix of two columns would break a long name in pieces.
    table = Table()
    table.add_column("before ↓ after →", overflow="fold")
    for column in heatmap.columns:
        table.add_column(Text(column), justify="right", overflow="fold")
    for row in heatmap.rows:
        table.add_row(Text(row.before), *(str(cell.count) for cell in row.cells))
    return table


def _value(shown: ShownValue) -> Text:
    return Text(shown.text, style=VALUE_STYLES[shown.kind])


def _examples_table(view: ReportView) -> Table:
    table = Table(title="Examples", title_justify="left")
    table.add_column("field", overflow="fold")
    table.add_column("session", overflow="fold")
    table.add_column("before", overflow="fold", ratio=1)
    table.add_column("after", overflow="fold", ratio=1)
    for example in view.examples:
        table.add_row(Text(example.field), Text(example.session_id),
                      _value(example.before), _value(example.after))
    return table


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """Print `report` (the report JSON) as a title and tables."""
    view = report_view(report)
    console.print(_title(view))
    console.print(_sessions_table(view))
    console.print(_fields_table(view))
    if view.numbers:
        console.print(_numbers_table(view))
    for heatmap in view.heatmaps:
        console.print(Text(heatmap.field, style="bold"))
        console.print(_matrix_table(heatmap))
    if view.examples:
        console.print(_examples_table(view))
    else:
        console.print("No field changed.")
