"""Server-rendered HTML: the change report page (`backfill report --html`) now, the operator
console later. Templates live in `templates/`; partials in `templates/partials/` are shared, so
the console can place the same report body inside its own layout."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def template_environment() -> Environment:
    """A fresh Jinja2 environment over this package's templates.

    Escaping is on for every .html template, since report and console pages show values
    customers and LLMs wrote; StrictUndefined turns a misspelt variable into an error instead
    of an empty cell that looks like data. Callers that add globals (the console's CSRF
    token) get their own environment rather than mutating a shared one.
    """
    return Environment(
        loader=PackageLoader("scheduler.web", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
