"""shared.logs: one formatter for every logger of a process, JSON or text, with the context."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from shared import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# Loggers the tests write to: other tests of the run may have configured them (a uvicorn
# server with its own logging config gives them handlers, levels and propagate=False), so each
# test starts them as `configure` expects them in a process of ours, and puts them back.
USED_LOGGERS = ("httpx", "httpcore", "celery.worker.strategy", "celery.app.trace",
                "uvicorn", "uvicorn.error", "uvicorn.access", "backfill")


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """`configure` owns the root logger; pytest's own capture must get it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = {name: _state(logging.getLogger(name)) for name in USED_LOGGERS}
    for name in USED_LOGGERS:
        _set(logging.getLogger(name), (logging.NOTSET, [], True))
    yield
    root.handlers, root.level = handlers, level
    for name, state in saved.items():
        _set(logging.getLogger(name), state)
    logging.captureWarnings(False)


LoggerState = tuple[int, list[logging.Handler], bool]


def _state(logger: logging.Logger) -> LoggerState:
    return logger.level, list(logger.handlers), logger.propagate


def _set(logger: logging.Logger, state: LoggerState) -> None:
    logger.level, logger.handlers, logger.propagate = state


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_ts_level_logger_event_first_then_the_fields() -> None:
    stream = io.StringIO()
    assert logs.configure("json", stream=stream) == "json"
    logging.getLogger("backfill.pipeline").warning(
        logs.SESSION_FINISHED, extra={"job_id": "bf_1", "outcome": "failed", "error_kind": None})
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert list(record)[:4] == ["ts", "level", "logger", "event"]
    assert record["level"] == "warning" and record["logger"] == "backfill.pipeline"
    assert record["event"] == "session_finished" and record["ts"].endswith("Z")
    assert (record["job_id"], record["outcome"], record["error_kind"]) == ("bf_1", "failed", None)


def test_bound_context_joins_every_line_inside_and_is_gone_after() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    log = logging.getLogger("celery.app.trace")
    with logs.bound(job_id="bf_2", session_id="call_9"):
        log.info("inside %s", "the task")
    log.info("after")
    inside, after = json_lines(stream)
    assert inside["event"] == "inside the task"
    assert (inside["job_id"], inside["session_id"]) == ("bf_2", "call_9")
    assert "job_id" not in after and "session_id" not in after


def test_text_shows_the_same_fields_as_key_value_pairs() -> None:
    stream = io.StringIO()
    logs.configure("text", stream=stream)
    logging.getLogger("backfill.state.jobs").info(
        logs.JOB_STATE, extra={"job_id": "bf_3", "from": "running", "to": "paused",
                               "reason": "llm_auth: 401"})
    line = stream.getvalue()
    assert "job_state" in line and "[backfill.state.jobs]" in line
    for pair in ("job_id=bf_3", "from=running", "to=paused", "reason='llm_auth: 401'"):
        assert pair in line
    assert "\x1b[" not in line  # no colours when the stream is not a terminal


def test_the_default_is_text_on_a_terminal_and_json_otherwise() -> None:
    assert logs.log_format(None, Terminal()) == "text"
    assert logs.log_format(None, io.StringIO()) == "json"
    assert logs.log_format("json", Terminal()) == "json"
    assert logs.log_format("text", io.StringIO()) == "text"


def test_tracebacks_are_rendered_without_local_variables() -> None:
    for chosen in ("json", "text"):
        stream = io.StringIO()
        logs.configure(chosen, stream=stream)  # type: ignore[arg-type]
        try:
            transcript = "my card number is 4111 1111 1111 1111"
            raise ValueError(f"a failure of {len(transcript)} characters")
        except ValueError:
            logging.getLogger("backfill.scheduler").exception("pass failed")
        output = stream.getvalue()
        assert "ValueError: a failure of 37 characters" in output
        assert "4111" not in output, chosen


def test_celery_and_uvicorn_extras_are_cleaned_and_access_lines_get_fields() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s received", {"name": "backfill.analyze_session"},
        extra={"data": {"args": "['bf_1', 'call_1']"}})
    logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[36mS"})
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/backfills", "1.1", 200)
    celery, started, access = json_lines(stream)
    assert celery["event"] == "Task backfill.analyze_session received" and "data" not in celery
    assert "color_message" not in started
    assert (access["method"], access["path"], access["status"]) == ("GET", "/v1/backfills", 200)


def test_http_clients_do_not_log_request_urls_and_warnings_are_lines_too() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    logging.getLogger("httpx").info("HTTP Request: POST https://hooks.example/t0ken")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the test settings turn warnings into errors
        warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
    (line,) = json_lines(stream)
    assert line["logger"] == "py.warnings" and "a library is unhappy" in line["event"]


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("json", stream=first)
    logs.configure("json", stream=second)
    logging.getLogger("backfill").info("once")
    assert first.getvalue() == "" and len(json_lines(second)) == 1
