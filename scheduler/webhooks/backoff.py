"""When a failed webhook delivery is tried again, and when it stops.

Deliveries back off exponentially with full jitter (the delay is uniform between zero and a
ceiling that doubles with each attempt up to a cap, then raised to a floor): after an
outage, the retries spread over the window instead of arriving together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

DEFAULT_BASE_S = 10.0
DEFAULT_CAP_S = 3600.0
# Never retry at once: a jitter near zero would send the next attempt straight into a
# receiver that has just failed, and a zero delay spins the delivery loop.
FLOOR_S = 1.0
# DESIGN.md promises retries "for at least 24 h". `gives_up` is asked after a failed attempt,
# so the last attempt happens past the horizon; the two hours beyond 24 keep that promise
# measured from when the event was created, even if the first attempt waited behind a
# scheduler that was down or busy for a while, and they absorb clock differences between
# the processes that write `first_attempt_at` and `now`. Once delays reach the 1 h cap they
# average half an hour, so the margin costs about four more attempts per dead endpoint.
DEFAULT_HORIZON_S = 26 * 3600
# Doubling more than this many times exceeds any cap; bounding it keeps a large attempt
# number from overflowing the float power.
_MAX_DOUBLINGS = 64


def next_attempt_delay_s(attempt: int, *, base_s: float = DEFAULT_BASE_S,
                         cap_s: float = DEFAULT_CAP_S,
                         jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 = the first delivery).

    The ceiling is `base_s * 2 ** (attempt - 1)`, at most `cap_s`; the delay is `jitter()`
    (a number in [0, 1]) times the ceiling, and never below FLOOR_S.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    return max(FLOOR_S, min(ceiling, jitter() * ceiling))


def gives_up(first_attempt_at: datetime, now: datetime, *,
             horizon_s: float = DEFAULT_HORIZON_S) -> bool:
    """Whether a delivery that has just failed is abandoned instead of scheduled again."""
    return now - first_attempt_at >= timedelta(seconds=horizon_s)
