"""Structured logs: one formatter per process for our loggers, Celery's and uvicorn's.

Every long-running process (worker, scheduler, API) calls `configure` once at start: the
worker from Celery's `setup_logging` signal (so Celery configures nothing itself and its own
lines go through the same formatter), the scheduler and the API from their CLI verbs.
`BACKFILL_LOG_FORMAT=json` writes one JSON object per line with `ts`, `level`, `logger`,
`event` and the context; `text` shows the same fields as `key=value` after the event. The
default is `text` on a terminal and `json` otherwise (a file, a container's log).

Code logs with the standard library, the event as the message and its fields as `extra=`:
`log.info(SESSION_FINISHED, extra={...})`. Context bound with `bound` (job and session of the
task a thread runs) joins every line logged inside it, Celery's included.

Never a transcript, an analysis value, a prompt or a key in a field or a message (DESIGN): log
ids, counts, kinds and classes of errors. Tracebacks are rendered without local variables.

`structlog` is imported where it is used: the state transitions name their events from here,
and a CLI read verb that imports them must not pay for the formatter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TextIO

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "text"]

# The events DESIGN names; their fields are listed where they are logged.
SESSION_FINISHED = "session_finished"
JOB_STATE = "job_state"

# A JSON line starts with these, so a person reading raw lines finds them in one place.
_LEADING_KEYS = ("ts", "level", "logger", "event")
# HTTP clients that log every request's URL at INFO: a webhook's URL may carry a token, and
# LLM requests are counted by the metrics instead.
_QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
# Celery passes its message's format arguments again as `extra={"data": …}`, uvicorn its
# message with terminal colours as `color_message`: the message already says it all.
_DROPPED_EXTRAS = ("data", "color_message")
# uvicorn's access line, `client - "METHOD path HTTP/v" status`, also gets its parts as fields.
_ACCESS_LOGGER = "uvicorn.access"


def log_format(chosen: LogFormat | None, stream: TextIO | None = None) -> LogFormat:
    """The configured format, else text for a person at a terminal and json for a machine."""
    if chosen is not None:
        return chosen
    target = stream or sys.stderr
    return "text" if target.isatty() else "json"


def configure(chosen: LogFormat | None, level: int | str = logging.INFO,
              stream: TextIO | None = None) -> LogFormat:
    """Route every logger of the process through one handler on `stream` (stderr); returns
    the format in use. Calling it again replaces the handler (tests, re-configuration)."""
    import structlog

    target = stream or sys.stderr
    used = log_format(chosen, target)
    handler = logging.StreamHandler(target)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_context_chain(), pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *_renderers(used, colors=used == "text" and target.isatty())],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return used


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Ids that join every line logged by this thread (or task) until the block ends."""
    from structlog.contextvars import bound_contextvars

    with bound_contextvars(**context):
        yield


def _context_chain() -> list[Processor]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.ExtraAdder(),
        _drop_extras,
        _access_fields,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]


def _renderers(used: LogFormat, *, colors: bool) -> list[Processor]:
    import structlog

    # Neither renderer shows local variables in a traceback: they may hold a transcript.
    if used == "json":
        return [structlog.processors.format_exc_info, _leading_keys_first,
                structlog.processors.JSONRenderer(ensure_ascii=False)]
    return [structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="ts", sort_keys=False,
                                          exception_formatter=structlog.dev.plain_traceback)]


def _drop_extras(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    for key in _DROPPED_EXTRAS:
        event.pop(key, None)
    return event


def _access_fields(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    # The message already holds its arguments; only the access line's become fields.
    args = event.pop("positional_args", None)
    record = event.get("_record")
    if getattr(record, "name", None) == _ACCESS_LOGGER and isinstance(args, tuple) \
            and len(args) == 5:
        event.update(method=args[1], path=args[2], status=args[4])
    return event


def _leading_keys_first(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    leading = {key: event.pop(key) for key in _LEADING_KEYS if key in event}
    leading.update(event)
    return leading
