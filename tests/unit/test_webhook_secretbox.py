"""Webhook secrets at rest: Fernet under BACKFILL_SECRET_KEY, with rotation, never leaking
a key."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet

from scheduler.webhooks.secretbox import (
    MALFORMED_KEY_MESSAGE,
    NO_KEY_MESSAGE,
    SecretBox,
    SecretKeyMissing,
    WrongSecretKey,
    new_secret_key,
    parse_secret_key,
    parse_secret_keys,
)
from shared.errors import BackfillError

KEY = new_secret_key()
OTHER_KEY = new_secret_key()
SECRET = "whsec_plaintext-secret"


def test_a_new_key_is_a_fernet_key() -> None:
    assert len(base64.urlsafe_b64decode(KEY)) == 32
    Fernet(KEY)  # accepted by the library itself
    assert KEY != OTHER_KEY


def test_parse_accepts_a_key_with_surrounding_whitespace() -> None:
    assert parse_secret_key(f"  {KEY}\n") == KEY.encode()


@pytest.mark.parametrize("value", [
    "",
    "not-a-key",
    KEY[:-1],                                                      # padding missing
    KEY[:-2] + "==",                                               # wrong length
    base64.urlsafe_b64encode(b"x" * 16).decode(),                  # 16 bytes
    base64.urlsafe_b64encode(b"x" * 33).decode(),                  # 33 bytes
    base64.b64encode(b"\xfb" * 32).decode(),                       # standard, not url-safe
    KEY[:20] + "!" + KEY[21:],                                     # base64 would skip the '!'
    KEY[:20] + "\N{GREEK SMALL LETTER ALPHA}" + KEY[21:],
])
def test_parse_refuses_what_is_not_a_fernet_key(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_secret_key(value)
    assert str(caught.value) == MALFORMED_KEY_MESSAGE
    assert "backfill secret-key" in MALFORMED_KEY_MESSAGE


def test_a_malformed_key_is_not_quoted_in_the_error() -> None:
    almost = KEY[:-1]
    with pytest.raises(ValueError) as caught:
        parse_secret_keys(f"{KEY},{almost}")
    assert almost not in str(caught.value) and KEY not in str(caught.value)
    assert caught.value.__cause__ is None


def test_parse_reads_several_keys_in_order() -> None:
    assert parse_secret_keys(f"{KEY}, {OTHER_KEY}") == [KEY.encode(), OTHER_KEY.encode()]


@pytest.mark.parametrize("value", [f"{KEY},", f",{KEY}", f"{KEY},,{OTHER_KEY}"])
def test_parse_refuses_an_empty_entry(value: str) -> None:
    with pytest.raises(ValueError, match="Fernet key"):
        parse_secret_keys(value)


def test_round_trip() -> None:
    box = SecretBox.from_setting(KEY)
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert box.decrypt(token) == SECRET


def test_round_trip_of_non_ascii_text() -> None:
    box = SecretBox.from_setting(KEY)
    assert box.decrypt(box.encrypt("sécret ✓")) == "sécret ✓"


def test_each_encryption_differs() -> None:
    box = SecretBox.from_setting(KEY)
    assert box.encrypt(SECRET) != box.encrypt(SECRET)


def test_a_wrong_key_is_refused_clearly() -> None:
    token = SecretBox.from_setting(KEY).encrypt(SECRET)
    with pytest.raises(WrongSecretKey) as caught:
        SecretBox.from_setting(OTHER_KEY).decrypt(token)
    assert "BACKFILL_SECRET_KEY" in str(caught.value)
    assert KEY not in str(caught.value) and OTHER_KEY not in str(caught.value)
    assert isinstance(caught.value, BackfillError)


@pytest.mark.parametrize("mangle", [lambda t: t[:-4] + "AAAA", lambda t: t[:10],
                                    lambda t: "not a token", lambda t: t + "\N{SNOWMAN}"])
def test_an_altered_token_is_refused(mangle: Callable[[str], str]) -> None:
    box = SecretBox.from_setting(KEY)
    token = box.encrypt(SECRET)
    with pytest.raises(WrongSecretKey):
        box.decrypt(mangle(token))


def test_rotation_first_key_encrypts_every_key_decrypts() -> None:
    old_token = SecretBox.from_setting(OTHER_KEY).encrypt(SECRET)
    rotating = SecretBox.from_setting(f"{KEY},{OTHER_KEY}")
    assert rotating.decrypt(old_token) == SECRET
    new_token = rotating.encrypt(SECRET)
    assert SecretBox.from_setting(KEY).decrypt(new_token) == SECRET
    with pytest.raises(WrongSecretKey):
        SecretBox.from_setting(OTHER_KEY).decrypt(new_token)


def test_rotate_re_encrypts_under_the_first_key() -> None:
    old_token = SecretBox.from_setting(OTHER_KEY).encrypt(SECRET)
    rotated = SecretBox.from_setting(f"{KEY},{OTHER_KEY}").rotate(old_token)
    # Once every token is rotated, the old key can be dropped.
    assert SecretBox.from_setting(KEY).decrypt(rotated) == SECRET


def test_rotate_refuses_a_token_no_key_opens() -> None:
    foreign = SecretBox.from_setting(new_secret_key()).encrypt(SECRET)
    with pytest.raises(WrongSecretKey):
        SecretBox.from_setting(f"{KEY},{OTHER_KEY}").rotate(foreign)


@pytest.mark.parametrize("value", [None, "", "  \n"])
def test_no_key_configured_says_how_to_make_one(value: str | None) -> None:
    with pytest.raises(SecretKeyMissing) as caught:
        SecretBox.from_setting(value)
    assert str(caught.value) == NO_KEY_MESSAGE
    assert "backfill secret-key" in NO_KEY_MESSAGE
    assert "every API replica and scheduler" in NO_KEY_MESSAGE


def test_a_malformed_setting_is_a_value_error_not_a_missing_key() -> None:
    with pytest.raises(ValueError, match="backfill secret-key"):
        SecretBox.from_setting("not-a-key")


def test_a_box_needs_a_key() -> None:
    with pytest.raises(ValueError):
        SecretBox([])


def test_the_repr_hides_the_keys() -> None:
    box = SecretBox.from_setting(f"{KEY},{OTHER_KEY}")
    shown = repr(box) + str(box)
    assert KEY not in shown and OTHER_KEY not in shown
    assert shown.startswith("SecretBox(<2 key(s) hidden>)")
