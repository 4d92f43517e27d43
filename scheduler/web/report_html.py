"""The change report as one self-contained HTML page (`backfill report JOB --html FILE`)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from jinja2 import Environment

from scheduler.web import template_environment
from scheduler.web.report_view import report_view

PAGE_TEMPLATE = "report.html"
BODY_TEMPLATE = "partials/report_body.html"


@cache
def _environment() -> Environment:
    # One environment per process keeps Jinja's compiled-template cache across renders.
    return template_environment()


def render_report_html(report: Mapping[str, Any], *, generated_at: str | None = None) -> str:
    """The page for `report` (the report JSON of the API and `backfill report --json`)."""
    view = report_view(report, generated_at=generated_at)
    return _environment().get_template(PAGE_TEMPLATE).render(view=view)


def render_report_body(report: Mapping[str, Any], *, generated_at: str | None = None) -> str:
    """The report body alone, as the console places it inside its own layout."""
    view = report_view(report, generated_at=generated_at)
    return _environment().get_template(BODY_TEMPLATE).render(view=view)
