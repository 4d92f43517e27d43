"""The console's cookies: a signed-in session and the sign-in form's token, sealed with a key
derived from the deployment's secret (`BACKFILL_SECRET_KEY`).

A sealed cookie is a Fernet token: encrypted and authenticated, with its issue time inside, so
an altered, forged or expired cookie simply does not open. The session holds the admin key's
id and the session's CSRF token, never the key. The sealing key is derived (HKDF) from each
deployment key rather than used as is, so a cookie and a webhook secret encrypted under the
same setting can never be taken for one another.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from scheduler.webhooks.secretbox import MalformedSecretKey, parse_secret_keys
from shared.settings import Settings

SESSION_COOKIE: Final = "backfill_console"
SIGN_IN_COOKIE: Final = "backfill_console_sign_in"
COOKIE_PATH: Final = "/console"
SESSION_TTL_S: Final = 8 * 3600
# The sign-in form's token only has to outlive a person finding their key.
SIGN_IN_TTL_S: Final = 3600

NO_SECRET_KEY_MESSAGE: Final = (
    "console sign-in needs BACKFILL_SECRET_KEY, the deployment's secret that signs console "
    "sessions: make one with `backfill secret-key` and set it for every API replica")

_PURPOSE_SESSION: Final = "session"
_PURPOSE_SIGN_IN: Final = "sign-in"
_HKDF_INFO: Final = b"backfill operator console cookies v1"


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in operator: the admin key's id and this session's CSRF token."""

    key_id: str
    csrf_token: str


def new_session(key_id: str) -> ConsoleSession:
    return ConsoleSession(key_id=key_id, csrf_token=new_csrf_token())


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str, given: str | None) -> bool:
    """In constant time, so the comparison tells an attacker nothing about the token."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def _cookie_key(deployment_key: bytes) -> bytes:
    raw = base64.urlsafe_b64decode(deployment_key)
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(raw)
    return base64.urlsafe_b64encode(derived)


class Sealer:
    """Seals with the first deployment key and opens with any (keys rotate as for webhooks)."""

    def __init__(self, deployment_keys: Sequence[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(_cookie_key(key)) for key in deployment_keys])

    def __repr__(self) -> str:
        return "Sealer(<keys hidden>)"

    def seal_session(self, session: ConsoleSession) -> str:
        return self._seal({"p": _PURPOSE_SESSION, "k": session.key_id, "c": session.csrf_token})

    def open_session(self, token: str | None) -> ConsoleSession | None:
        payload = self._open(token, _PURPOSE_SESSION, SESSION_TTL_S)
        if payload is None or not isinstance(payload.get("k"), str):
            return None
        return ConsoleSession(key_id=payload["k"], csrf_token=payload["c"])

    def seal_sign_in(self, csrf_token: str) -> str:
        return self._seal({"p": _PURPOSE_SIGN_IN, "c": csrf_token})

    def open_sign_in(self, token: str | None) -> str | None:
        """The CSRF token the sign-in form was given, if its cookie is genuine and fresh."""
        payload = self._open(token, _PURPOSE_SIGN_IN, SIGN_IN_TTL_S)
        return None if payload is None else str(payload["c"])

    def _seal(self, payload: dict[str, str]) -> str:
        raw = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return self._fernet.encrypt(raw).decode("ascii")

    def _open(self, token: str | None, purpose: str, ttl_s: int) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            raw = self._fernet.decrypt(token.encode("ascii"), ttl=ttl_s)
        except (InvalidToken, UnicodeEncodeError):
            return None
        payload = json.loads(raw)
        # A sign-in cookie must never pass for a session, nor the other way round.
        if not isinstance(payload, dict) or payload.get("p") != purpose:
            return None
        if not isinstance(payload.get("c"), str):
            return None
        return payload


def sealer_from_settings(settings: Settings) -> Sealer | None:
    """The sealer of the deployment's secret; None when none is set (sign-in is refused with
    NO_SECRET_KEY_MESSAGE). A malformed secret raises MalformedSecretKey: it must stop the
    process at start, not at the first sign-in."""
    value = settings.secret_key.get_secret_value() if settings.secret_key else ""
    if not value.strip():
        return None
    try:
        return Sealer(parse_secret_keys(value))
    except ValueError:
        raise MalformedSecretKey() from None
