"""The `Backfill-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

The HMAC key is the endpoint's secret exactly as `webhook add` printed it (its UTF-8 bytes,
`whsec_` prefix included), so a receiver pastes the secret and needs no decoding step. The
timestamp is inside the signed message, so a captured request cannot be replayed later than
the receiver's tolerance with a fresh `t`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SIGNATURE_HEADER = "Backfill-Signature"
DEFAULT_TOLERANCE_S = 300

_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """The header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify(header: str, secret: str, body: bytes, *, now: int,
           tolerance_s: int = DEFAULT_TOLERANCE_S) -> bool:
    """What a receiver does: True when one `v1` entry signs `body` with `secret` and `t` is
    within `tolerance_s` of `now` (either side: a sender's clock may run ahead).

    Several `v1` entries are accepted (a sender signing with an old and a new secret while
    they rotate); entries of other schemes are ignored, so a later scheme can be added without
    breaking receivers. A header without exactly one `t`, with a part that is not `key=value`,
    or without any `v1`, is refused.
    """
    parsed = _parse(header)
    if parsed is None:
        return False
    timestamp, candidates = parsed
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, body, timestamp).encode("ascii")
    # Compare against every candidate, not stopping at the first match, so the time taken
    # does not depend on which entry (if any) matched.
    matches = [hmac.compare_digest(expected, candidate.encode()) for candidate in candidates]
    return any(matches)


def new_secret() -> str:
    """A new endpoint secret: 32 random bytes, url-safe, recognisable by its prefix."""
    return "whsec_" + secrets.token_urlsafe(32)


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int, list[str]] | None:
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key or not value:
            return None
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]):
        return None
    return int(timestamps[0]), candidates
