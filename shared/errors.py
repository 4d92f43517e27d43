"""One exception root. The docstring is the default message; data lives in attributes.

Three families reach a user, each with its own exit code and HTTP status:
- `InvalidInput` — what the caller sent is refused (CLI exit 2, HTTP 422; `NotFound` 404);
- `EnvironmentProblem` — the database, its schema or the broker is not usable right now
  (CLI exit 3, HTTP 503): one line saying what is wrong and what to do, never SQL text;
- `AnalysisError` — the analysis of one session failed; `kind` is the item's error_kind.
"""

from __future__ import annotations


class BackfillError(Exception):
    """Backfill error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidInput(BackfillError):
    """The input was refused (CLI exit 2, HTTP 422)."""


class InvalidFilter(InvalidInput):
    """A filter row was refused."""

    def __init__(self, index: int | None, problem: str) -> None:
        self.index = index
        self.problem = problem
        where = f"filters[{index}]: " if index is not None else "filters: "
        super().__init__(where + problem)


class InvalidImport(InvalidInput):
    """The import file was refused; nothing was imported."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        lines = [f"line {number}: {reason}" for number, reason in problems]
        super().__init__(f"{len(problems)} bad line(s), nothing imported:\n" + "\n".join(lines))


class NotFound(BackfillError):
    """No such object."""


class EnvironmentProblem(BackfillError):
    """The environment is not usable (CLI exit 3, HTTP 503)."""


class DatabaseUnreachable(EnvironmentProblem):
    """Postgres cannot be reached."""


class SchemaNotReady(EnvironmentProblem):
    """the database has no backfill schema (or an older one): run `backfill db upgrade`"""


class StatementTimedOut(EnvironmentProblem):
    """A database statement ran past its timeout."""


class BrokerUnreachable(EnvironmentProblem):
    """The broker cannot be reached."""


class SettingsInvalid(EnvironmentProblem):
    """A setting (an environment variable) has a value the system refuses."""


class AnalysisError(BackfillError):
    """The analysis of one session failed; `kind` is the item's error_kind."""

    kind: str = "llm_server_error"
    retryable: bool = False
    job_fatal: bool = False

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransientAnalysisError(AnalysisError):
    """A transient failure: retried with backoff up to the attempt cap."""

    retryable = True


class LLMRateLimited(TransientAnalysisError):
    """The LLM provider rate-limited the request (429)."""

    kind = "llm_rate_limited"


class LLMOverloaded(TransientAnalysisError):
    """The LLM provider is overloaded (529)."""

    kind = "llm_overloaded"


class LLMServerError(TransientAnalysisError):
    """The LLM provider failed (5xx)."""

    kind = "llm_server_error"


class LLMTimeout(TransientAnalysisError):
    """The LLM call timed out."""

    kind = "llm_timeout"


class LLMConnection(TransientAnalysisError):
    """The LLM provider could not be reached."""

    kind = "llm_connection"


class DatabaseUnavailable(TransientAnalysisError):
    """The database could not be reached."""

    kind = "db_unavailable"


class LLMInvalidOutput(AnalysisError):
    """The LLM answer did not fit the schema (retried a few times, then failed)."""

    kind = "llm_invalid_output"
    retryable = True


class LLMBadRequest(AnalysisError):
    """The LLM provider refused the request as invalid (400/413)."""

    kind = "llm_bad_request"


class LLMRefusal(AnalysisError):
    """The model refused to answer."""

    kind = "llm_refusal"


class AnalysisConfigMissing(AnalysisError):
    """No analysis configuration was found for the session's agent."""

    kind = "config_missing"


class LLMAuth(AnalysisError):
    """The LLM provider rejected the API key (401/403): the job is paused."""

    kind = "llm_auth"
    job_fatal = True


class LLMBilling(AnalysisError):
    """The LLM account cannot be billed: the job is paused."""

    kind = "llm_billing"
    job_fatal = True
