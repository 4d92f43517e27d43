"""Fault injection: which request fails, and how (the rules are in the package doc)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.dev.llm_stub.content import messages_text
from scheduler.dev.llm_stub.wire import ApiError

# Faults that are not an HTTP status, and the names they may also be given by.
BEHAVIOURS = frozenset({"reset", "hang", "malformed_json", "refusal", "max_tokens"})
CONNECTION_BEHAVIOURS = frozenset({"reset", "hang"})
_FAULT_ALIASES: dict[str, str] = {
    "connection_reset": "reset", "timeout": "hang", "malformed": "malformed_json",
}


def fault_name(value: int | str) -> str:
    """The canonical name of a fault: an HTTP status as digits, or a behaviour."""
    name = str(value).strip().lower()
    name = _FAULT_ALIASES.get(name, name)
    if name in BEHAVIOURS:
        return name
    if name.isdigit() and 400 <= int(name) <= 599:
        return name
    known = ", ".join(sorted(BEHAVIOURS))
    raise ValueError(f"unknown fault {value!r}: an HTTP status 400-599 or one of {known}")


@dataclass(frozen=True)
class FaultConfig:
    """Faults to inject: a reproducible share of requests, and fixed faults for some sessions."""

    error_rate: float = 0.0
    error_status: int = 529
    fail_session_ids: Mapping[str, int | str] = field(default_factory=dict)
    rates: Mapping[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        # Normalised once, so a typo fails at start-up, not on the thousandth request.
        sessions = {sid: fault_name(fault) for sid, fault in self.fail_session_ids.items()}
        rates = {fault_name(fault): float(share) for fault, share in self.rates.items()}
        object.__setattr__(self, "fail_session_ids", sessions)
        object.__setattr__(self, "rates", rates)
        shares = [self.error_rate, *rates.values()]
        if any(not 0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be in [0, 1] and add up to at most 1")
        fault_name(self.error_status)
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must not be negative")

    def draws(self) -> list[tuple[str, float]]:
        """(fault, share) in draw order: the legacy error_rate entry first."""
        legacy = [(fault_name(self.error_status), self.error_rate)] if self.error_rate else []
        return legacy + list(self.rates.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate, "error_status": self.error_status,
            "fail_session_ids": dict(self.fail_session_ids), "rates": dict(self.rates),
            "retry_after_s": self.retry_after_s, "hang_s": self.hang_s,
        }

    @classmethod
    def from_json(cls, document: Any) -> FaultConfig:
        """The admin endpoint's body; raises ValueError naming what is wrong."""
        if not isinstance(document, Mapping):
            raise ValueError("faults must be a JSON object")
        unknown = set(document) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        try:
            return cls(**document)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"bad fault settings: {exc}") from exc


class ConnectionFault(Exception):
    """A fault answered at the connection level (reset, hang) instead of with an HTTP answer."""

    def __init__(self, behaviour: str, hang_s: float = 0.0) -> None:
        super().__init__(behaviour)
        self.behaviour = behaviour
        self.hang_s = hang_s


def names_session(body: Mapping[str, Any], session_id: str) -> bool:
    """Whether the request's messages hold ``session_id=<ID>`` for exactly this id (a longer
    id that merely starts with it is another session)."""
    text = messages_text(body.get("messages") or [])
    return re.search(rf"session_id={re.escape(session_id)}(?![\w-])", text) is not None


def pick_fault(faults: FaultConfig, body: Mapping[str, Any], raw: bytes, number: int) -> str | None:
    """The fault this request gets, if any: a session rule first, then the rate draw."""
    for session_id, fault in faults.fail_session_ids.items():
        if names_session(body, session_id):
            return str(fault)
    point, ceiling = _draw(raw, number), 0.0
    for fault, share in faults.draws():
        ceiling += share
        if point < ceiling:
            return fault
    return None


def raise_status_fault(fault: str) -> None:
    """An HTTP-status fault becomes the Anthropic error for that status."""
    if fault.isdigit():
        status = int(fault)
        raise ApiError(status, _fault_message(status))


def _draw(raw: bytes, number: int) -> float:
    """A reproducible number in [0, 1): the same body at the same position draws the same."""
    digest = hashlib.sha256(raw + str(number).encode()).hexdigest()
    return int(digest[:16], 16) / float(1 << 64)


def _fault_message(status: int) -> str:
    if status == 529:
        return "Overloaded"
    if status == 429:
        return "Number of requests has exceeded your rate limit"
    return f"injected fault (HTTP {status})"


# --- command-line flags -----------------------------------------------------------------------


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the key may itself hold ``=``: the last one splits)."""
    key, sep, value = text.rpartition("=")
    if not sep or not key or not value:
        raise ValueError(f"expected {what}, got {text!r}")
    return key, value


def faults_from_flags(
    *,
    error_rate: float = 0.0,
    error_status: int = 529,
    fail_sessions: Iterable[str] = (),
    rates: Iterable[str] = (),
    retry_after_s: float = 1.0,
    hang_s: float = 30.0,
) -> FaultConfig:
    """The command-line flags (``ID=FAULT``, ``FAULT=RATE``) as a FaultConfig."""
    sessions = dict(parse_assignment(text, "SESSION_ID=FAULT") for text in fail_sessions)
    shares: dict[str, float] = {}
    for text in rates:
        fault, share = parse_assignment(text, "FAULT=RATE")
        try:
            shares[fault] = float(share)
        except ValueError as exc:
            raise ValueError(f"rate of {fault!r} is not a number: {share!r}") from exc
    return FaultConfig(error_rate, error_status, sessions, shares, retry_after_s, hang_s)
