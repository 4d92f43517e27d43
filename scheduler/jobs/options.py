"""A job's options (how much of the filtered set it takes, and its budget cap) and its mode,
validated.

Options are decoded JSON from the CLI or the HTTP body; null (or a missing option) means its
default. Messages name the option as a JSON user writes it: `options.limit: …`.

`trial_size` N makes the job a trial (DESIGN "Safe to apply"): N of the sessions the same job
without it would take. So `sample_rate` and `limit` narrow the set the trial samples from,
and the one contradiction is a `limit` below N: such a trial could never have N sessions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from shared.errors import InvalidInput
from shared.state.trials import TRIAL_OPTION
from shared.vocabulary import BATCH, LIVE, MODES, Mode, is_json_number, json_type

OPTION_NAMES = ("sample_rate", "limit", "skip_current", TRIAL_OPTION, "max_cost_usd")
MAX_LIMIT = 10_000_000
MAX_TRIAL_SIZE = 1000


@dataclass(frozen=True)
class JobOptions:
    """How much of the filtered set a job takes (see `selection` for the order), and the most
    it may spend (USD; None = no cap)."""

    sample_rate: float = 1.0
    limit: int | None = None
    skip_current: bool = False
    trial_size: int | None = None
    max_cost_usd: float | None = None

    @property
    def trial(self) -> bool:
        return self.trial_size is not None

    def without_trial(self) -> JobOptions:
        """The same selection as an applied job (what promoting a trial creates)."""
        return replace(self, trial_size=None)

    def as_json(self) -> dict[str, Any]:
        """The selection options, as the job row keeps them. The cap is not among them: it
        lives in the job's budget (a resume may raise it), shown as the job's max_cost_usd.
        Only a trial carries `trial_size`, so any other job's options stay as they were."""
        document: dict[str, Any] = {"sample_rate": self.sample_rate, "limit": self.limit,
                                    "skip_current": self.skip_current}
        if self.trial:
            document[TRIAL_OPTION] = self.trial_size
        return document


def _shown(value: object) -> str:
    return repr(value)[:40] if is_json_number(value) else json_type(value)


def _sample_rate(value: object) -> float:
    if value is None:
        return 1.0
    # NaN fails the range test like any other value outside (0, 1].
    if not is_json_number(value) or not 0 < value <= 1:
        raise InvalidInput(
            f"options.sample_rate: must be a number with 0 < r ≤ 1, got {_shown(value)}"
        )
    return float(value)


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(
            f"options.limit: must be an integer with 1 ≤ n ≤ {MAX_LIMIT:,}, got {_shown(value)}"
        )
    return value


def _skip_current(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"options.skip_current: must be a boolean, got {json_type(value)}")
    return value


def _trial_size(value: object, limit: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TRIAL_SIZE:
        raise InvalidInput(f"options.{TRIAL_OPTION}: must be an integer with 1 ≤ n ≤ "
                           f"{MAX_TRIAL_SIZE:,}, got {_shown(value)}")
    if limit is not None and limit < value:
        raise InvalidInput(f"options.{TRIAL_OPTION}: a trial of {value} sessions cannot come "
                           f"out of options.limit {limit}; lower the trial or raise the limit")
    return value


def parse_max_cost_usd(value: object, name: str = "options.max_cost_usd") -> float:
    """A budget cap: a finite number of USD above 0 (`name` is how the caller spells it)."""
    if not is_json_number(value) or not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{name}: must be a number of USD greater than 0, got {_shown(value)}")
    return float(value)


def _max_cost_usd(value: object) -> float | None:
    return None if value is None else parse_max_cost_usd(value)


def parse_options(raw: object) -> JobOptions:
    """Validate decoded JSON options; null (or a missing option) means its default."""
    if raw is None:
        return JobOptions()
    if isinstance(raw, JobOptions):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"options: must be an object, got {json_type(raw)}")
    unknown = sorted(str(name) for name in raw if name not in OPTION_NAMES)
    if unknown:
        raise InvalidInput(
            f"options: unknown option(s) {', '.join(unknown)[:200]} "
            f"(known: {', '.join(OPTION_NAMES)})"
        )
    limit = _limit(raw.get("limit"))
    return JobOptions(
        sample_rate=_sample_rate(raw.get("sample_rate")),
        limit=limit,
        skip_current=_skip_current(raw.get("skip_current")),
        trial_size=_trial_size(raw.get(TRIAL_OPTION), limit),
        max_cost_usd=_max_cost_usd(raw.get("max_cost_usd")),
    )


def parse_mode(mode: object) -> Mode | None:
    """`live`, `batch`, or None (decided by the size of the job)."""
    if mode is None:
        return None
    if mode == LIVE:
        return LIVE
    if mode == BATCH:
        return BATCH
    raise InvalidInput(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")


def resolve_mode(requested: Mode | None, matched: int, threshold: int) -> Mode:
    """An explicit mode wins; else batch above the threshold (0 = never automatically)."""
    if requested is not None:
        return requested
    return BATCH if threshold > 0 and matched > threshold else LIVE
