"""The retry policy (DESIGN "Error kinds"): what a failed analysis does next. Pure, so the rule
is one function a test can read; `shared.pipeline` carries the decision out through
`shared.state`.

- transient kinds go back to `pending` with a `not_before` time (exponential backoff, full
  jitter, never before the provider's `retry-after`) until the attempt cap;
- `llm_invalid_output` likewise, up to its own smaller cap;
- permanent kinds fail at once;
- job-fatal kinds (`llm_auth`, `llm_billing`) pause the whole job without charging an attempt.

Retries have this one owner: the SDK's own retries are switched off.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from shared import errors
from shared.settings import Settings


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "fail", "pause"]
    delay_s: float = 0.0


def decide(settings: Settings, attempt: int, exc: errors.AnalysisError) -> Decision:
    if exc.job_fatal:
        return Decision("pause")
    if exc.retryable and attempt < attempt_cap(settings, exc):
        return Decision("retry", retry_delay_s(settings, attempt, exc.retry_after_s))
    return Decision("fail")


def attempt_cap(settings: Settings, exc: errors.AnalysisError) -> int:
    if isinstance(exc, errors.LLMInvalidOutput):
        return settings.invalid_output_attempts
    return settings.max_attempts


def retry_delay_s(settings: Settings, attempt: int, retry_after_s: float | None) -> float:
    """Exponential backoff with full jitter, never shorter than the provider's retry-after."""
    ceiling = min(settings.retry_cap_s, settings.retry_base_s * (2 ** max(attempt - 1, 0)))
    delay = random.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.retry_cap_s)
