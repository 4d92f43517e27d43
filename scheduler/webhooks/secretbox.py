"""Webhook secrets at rest, encrypted under the deployment's `BACKFILL_SECRET_KEY` (Fernet:
AES-128-CBC with an HMAC-SHA256, so a token altered in the database is refused, not
decrypted to garbage).

The setting holds one Fernet key, or several separated by commas while rotating: the first
encrypts, every one decrypts. Rotation: put the new key first and keep the old one after it
on every API replica and scheduler, re-encrypt the stored secrets (`SecretBox.rotate`), then
drop the old key.

A key never appears in a message, an exception or a repr. The settings field that holds it
is a `SecretStr`, and the settings hide their input in validation errors, since pydantic's
errors otherwise quote the value.

`deployment_box` is the box of the setting: without a key, what needs it is refused
(`SecretKeyMissing`: CLI exit 2, HTTP 503); a malformed key is the environment's problem
(`MalformedSecretKey`: exit 3), and the API and the scheduler check it when they start
(`check_deployment_key`), so a typo stops them at once rather than at the first webhook.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from shared.errors import BackfillError, EnvironmentProblem

NO_KEY_MESSAGE = (
    "webhooks need BACKFILL_SECRET_KEY, the deployment's key that encrypts webhook secrets: "
    "make one with `backfill secret-key` and set it for every API replica and scheduler")
MALFORMED_KEY_MESSAGE = (
    "BACKFILL_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes), or several "
    "separated by commas while rotating; make one with: backfill secret-key")

# 32 bytes in url-safe base64 are exactly 43 characters and one '='. Matched strictly because
# base64 decoding skips characters outside its alphabet, which would accept a mangled key.
_FERNET_KEY = re.compile(r"[A-Za-z0-9_-]{43}=")


class SecretKeyMissing(BackfillError):
    """No BACKFILL_SECRET_KEY is configured; the message says how to make one."""

    def __init__(self) -> None:
        super().__init__(NO_KEY_MESSAGE)


class MalformedSecretKey(EnvironmentProblem):
    """BACKFILL_SECRET_KEY is set but is not a Fernet key; the message says how to make one."""

    def __init__(self) -> None:
        super().__init__(MALFORMED_KEY_MESSAGE)


class WrongSecretKey(BackfillError):
    """A stored webhook secret could not be decrypted: BACKFILL_SECRET_KEY is not the key it
    was encrypted with (while rotating, keep the old key after the new one), or the stored
    value was altered."""


def new_secret_key() -> str:
    """A new deployment key, for `backfill secret-key`."""
    return Fernet.generate_key().decode("ascii")


def parse_secret_key(value: str) -> bytes:
    """One Fernet key, surrounding whitespace ignored (a key read from a file ends in a
    newline); ValueError with MALFORMED_KEY_MESSAGE otherwise."""
    candidate = value.strip()
    if not _FERNET_KEY.fullmatch(candidate):
        raise ValueError(MALFORMED_KEY_MESSAGE)
    return candidate.encode("ascii")


def parse_secret_keys(value: str) -> list[bytes]:
    """The keys of the comma-separated setting, first (encrypting) key first."""
    return [parse_secret_key(part) for part in value.split(",")]


class SecretBox:
    """Encrypts with the first key, decrypts with any of them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError(MALFORMED_KEY_MESSAGE)
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._key_count = len(keys)

    @classmethod
    def from_setting(cls, value: str | None) -> SecretBox:
        """The box of the BACKFILL_SECRET_KEY setting. Unset or blank raises SecretKeyMissing
        (refuse the operation that needs it); malformed raises ValueError (stop at start)."""
        if value is None or not value.strip():
            raise SecretKeyMissing()
        return cls(parse_secret_keys(value))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        return self._keyed(self._fernet.decrypt, token).decode("utf-8")

    def rotate(self, token: str) -> str:
        """The same plaintext encrypted under the first key (for re-encrypting stored secrets
        after a new key is put first)."""
        return self._keyed(self._fernet.rotate, token).decode("ascii")

    def __repr__(self) -> str:
        return f"SecretBox(<{self._key_count} key(s) hidden>)"

    @staticmethod
    def _keyed(operation: Callable[[bytes], bytes], token: str) -> bytes:
        # `from None`: the cause adds nothing an operator can use, and messages stay key-free.
        try:
            return operation(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise WrongSecretKey() from None


def deployment_box(setting: SecretStr | None) -> SecretBox:
    """The box of the deployment's key (the BACKFILL_SECRET_KEY setting)."""
    try:
        return SecretBox.from_setting(setting.get_secret_value() if setting else None)
    except ValueError:
        raise MalformedSecretKey() from None


def check_deployment_key(setting: SecretStr | None) -> None:
    """At a process's start: a malformed key stops it; no key is fine until something needs
    one."""
    if setting is not None and setting.get_secret_value().strip():
        deployment_box(setting)
