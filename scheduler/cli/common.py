"""What every verb of the CLI shares: the Typer app, option types, output, and the rule that no
error of the user's input or of the environment ever reaches the user as a traceback.

Exit codes: 0 done; 1 an object that does not exist; 2 bad input (or a state that does not
allow the action, or a webhook verb without BACKFILL_SECRET_KEY); 3 the environment — Postgres
or the broker cannot be reached, the schema is missing or behind, a statement timed out, a
setting in the environment is malformed.

Verb modules import what a verb needs inside the verb: `backfill show JOB` must not pay for
the LLM SDK, the web framework or Flower.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from shared.errors import BackfillError, EnvironmentProblem, InvalidInput, NotFound

T = TypeVar("T")

EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class BackfillCLI(typer.Typer):
    """The Typer app, with the environment's failures turned into one line and exit code 3,
    whichever verb (or library below it) met them."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except EnvironmentProblem as exc:
            _fail(str(exc), EXIT_ENVIRONMENT)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            _fail(settings_problem(exc), EXIT_ENVIRONMENT)
        except Exception as exc:
            problem = environment_problem(exc)
            if problem is None:
                raise
            _fail(str(problem), EXIT_ENVIRONMENT)


def environment_problem(exc: BaseException) -> EnvironmentProblem | None:
    """The environment's failure behind an exception from the database or the broker."""
    from shared.db import environment_problem as database_problem
    from shared.settings import get_settings

    settings = get_settings()
    problem = database_problem(exc, settings.database_url)
    if problem is not None:
        return problem
    if _is_broker_failure(exc):
        from shared.broker import broker_location
        from shared.errors import BrokerUnreachable

        return BrokerUnreachable(f"cannot connect to the broker at "
                                 f"{broker_location(settings.broker_url)}: {type(exc).__name__}")
    return None


def settings_problem(exc: ValidationError) -> str:
    """The first malformed variable and what is wrong with it (the settings never quote the
    value: it may be a secret)."""
    error = exc.errors(include_url=False)[0]
    variable = ".".join(str(part) for part in error["loc"]).upper() or "settings"
    return f"{variable}: {error['msg']}"


def _is_broker_failure(exc: BaseException) -> bool:
    # Checked by module, so that a verb that never touched the broker never imports it.
    kombu_errors = sys.modules.get("kombu.exceptions")
    redis_errors = sys.modules.get("redis.exceptions")
    kinds = tuple(kind for kind in (
        getattr(kombu_errors, "OperationalError", None),
        getattr(redis_errors, "ConnectionError", None),
        getattr(redis_errors, "TimeoutError", None),
    ) if kind is not None)
    return bool(kinds) and isinstance(exc, kinds)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise SystemExit(code)


app = BackfillCLI(help="Post-call analysis backfill.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
api_key_app = typer.Typer(help="Bearer API keys of the HTTP API.", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only (to stdout).")]
Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace id.")]
Kind = Annotated[str, typer.Option("--kind", help="call or chat.")]
Filters = Annotated[str, typer.Option("--filters", help="JSON array of rows, or @file.")]
# Job options shared by preview and create (preview counts what create would take).
SampleRate = Annotated[float | None, typer.Option(
    "--sample-rate", help="Deterministic sample by session id, 0 < r ≤ 1.")]
Limit = Annotated[int | None, typer.Option("--limit", help="At most N sessions, newest first.")]
SkipCurrent = Annotated[bool, typer.Option(
    "--skip-current", help="Leave out sessions already analysed with the current configuration.")]
Trial = Annotated[int | None, typer.Option(
    "--trial", help="A trial of N sessions (1 ≤ N ≤ 1000): analysed and reported, never "
    "applied; `backfill promote` applies it.")]
Reason = Annotated[str | None, typer.Option(
    "--reason", help="Why (kept in the job's audit trail).")]
RequiredReason = Annotated[str, typer.Option(
    "--reason", help="Why (required; kept in the job's audit trail).")]


def guarded(action: Callable[[], T]) -> T:
    """Bad input exits 2 with one clear line; a missing object exits 1. Never a traceback."""
    try:
        return action()
    except InvalidInput as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except NotFound as exc:
        _fail(str(exc), EXIT_NOT_FOUND)
    except BackfillError as exc:
        if not _is_missing_secret_key(exc):
            raise
        _fail(str(exc), EXIT_BAD_INPUT)


def _is_missing_secret_key(exc: BaseException) -> bool:
    # Checked by module, so that a verb that never needs the key never imports cryptography.
    secretbox = sys.modules.get("scheduler.webhooks.secretbox")
    return secretbox is not None and isinstance(exc, secretbox.SecretKeyMissing)


def emit(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def required_reason(reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise InvalidInput("--reason: say why (it is kept in the job's audit trail)")
    return reason.strip()
