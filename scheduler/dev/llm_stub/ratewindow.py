"""The provider's request limit (``--rpm-limit``): a sliding window of Messages requests."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any

from scheduler.dev.llm_stub.wire import Answer, ApiError

# The headers of every answer when no limit is set: a limit far away.
RATE_LIMIT_HEADERS: dict[str, str] = {
    "anthropic-ratelimit-requests-limit": "100000",
    "anthropic-ratelimit-requests-remaining": "99999",
}


class RequestWindow:
    """The provider's request limit: at most ``limit`` Messages requests in any sliding window
    of ``window_s`` seconds (60 for a per-minute limit). Requests over it get a 429 with
    ``retry-after``; every answer carries the ``anthropic-ratelimit-requests-*`` headers.
    Admitted and rejected times are kept so tests and the bench can check the limit held."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("the request limit and its window must be positive")
        self.limit = limit
        self.window_s = window_s
        self.admitted: list[float] = []
        self.rejected: list[float] = []
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self, now: float) -> float | None:
        """None when admitted, else the seconds until a slot frees up (the retry-after)."""
        with self._lock:
            while self._recent and now - self._recent[0] >= self.window_s:
                self._recent.popleft()
            if len(self._recent) >= self.limit:
                self.rejected.append(now)
                return self._recent[0] + self.window_s - now
            self._recent.append(now)
            self.admitted.append(now)
            return None

    def headers(self, now: float) -> dict[str, str]:
        with self._lock:
            live = [t for t in self._recent if now - t < self.window_s]
        reset = (live[0] + self.window_s) if len(live) >= self.limit else now
        wall = time.time() + (reset - now)
        return {
            "anthropic-ratelimit-requests-limit": str(self.limit),
            "anthropic-ratelimit-requests-remaining": str(max(self.limit - len(live), 0)),
            "anthropic-ratelimit-requests-reset": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z",
        }

    def seconds_until_free(self, now: float) -> float:
        with self._lock:
            oldest = self._recent[0] if self._recent else now
        return max(oldest + self.window_s - now, 0.0)

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {"limit": self.limit, "window_s": self.window_s,
                    "admitted": list(self.admitted), "rejected": list(self.rejected)}


def check_rate_limit(window: RequestWindow | None) -> None:
    """Count a Messages request against the window; over the limit it is a 429."""
    if window is None:
        return
    if window.admit(time.monotonic()) is not None:
        raise ApiError(429, f"request rate limit of {window.limit} per "
                            f"{window.window_s:g} s exceeded")


def rate_limit_headers(
    window: RequestWindow | None, retry_after_s: float, status: int
) -> dict[str, str]:
    """Headers of every answer: the window's when a limit is set, else the fixed ones; a 429
    also carries retry-after (the window's wait when it caused the 429)."""
    now = time.monotonic()
    headers = dict(RATE_LIMIT_HEADERS) if window is None else window.headers(now)
    if status == 429:
        retry_after = retry_after_s
        if window is not None and headers["anthropic-ratelimit-requests-remaining"] == "0":
            retry_after = max(retry_after, window.seconds_until_free(now))
        headers["retry-after"] = f"{math.ceil(retry_after * 1000) / 1000:g}"
    return headers


def handle_rate_window(window: RequestWindow | None) -> Answer:
    """``GET /_ratelimit``: the limit and the monotonic times of admitted/rejected requests."""
    return 200, ({"limit": 0} if window is None else window.as_json())
