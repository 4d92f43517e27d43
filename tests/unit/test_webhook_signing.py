"""The Backfill-Signature header, as a sender writes it and a receiver checks it."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from scheduler.webhooks import signing
from scheduler.webhooks.signing import new_secret, signature_header, verify
from shared.state.events import new_event_id

SECRET = "whsec_test"
BODY = b'{"a":1}'
T = 1_700_000_000


def header_with(*entries: str) -> str:
    return ",".join(entries)


def v1(secret: str, body: bytes, timestamp: int) -> str:
    message = f"{timestamp}.".encode() + body
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_header_matches_an_hmac_computed_here() -> None:
    assert signature_header(SECRET, BODY, T) == f"t={T},{v1(SECRET, BODY, T)}"


def test_header_matches_a_vector_computed_outside_python() -> None:
    # printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec_test'
    expected = "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
    assert signature_header(SECRET, BODY, T) == f"t={T},v1={expected}"


def test_signature_covers_raw_bytes_that_are_not_text() -> None:
    body = b"\xff\x00\xfe"
    assert verify(signature_header(SECRET, body, T), SECRET, body, now=T)


def test_verify_accepts_a_fresh_header() -> None:
    assert verify(signature_header(SECRET, BODY, T), SECRET, BODY, now=T + 10)


def test_verify_refuses_a_tampered_body() -> None:
    assert not verify(signature_header(SECRET, BODY, T), SECRET, b'{"a":2}', now=T)


def test_verify_refuses_a_wrong_secret() -> None:
    assert not verify(signature_header(SECRET, BODY, T), "whsec_other", BODY, now=T)


def test_verify_refuses_a_timestamp_swapped_in() -> None:
    forged = f"t={T + 60},{v1(SECRET, BODY, T)}"
    assert not verify(forged, SECRET, BODY, now=T + 60)


@pytest.mark.parametrize("now", [T + 301, T - 301])
def test_verify_refuses_a_stale_or_future_timestamp(now: int) -> None:
    assert not verify(signature_header(SECRET, BODY, T), SECRET, BODY, now=now)


@pytest.mark.parametrize("now", [T + 300, T - 300])
def test_verify_accepts_the_edge_of_the_tolerance(now: int) -> None:
    assert verify(signature_header(SECRET, BODY, T), SECRET, BODY, now=now)


def test_tolerance_is_configurable() -> None:
    header = signature_header(SECRET, BODY, T)
    assert not verify(header, SECRET, BODY, now=T + 31, tolerance_s=30)
    assert verify(header, SECRET, BODY, now=T + 3600, tolerance_s=3600)


@pytest.mark.parametrize("order", ["good_first", "good_last"])
def test_verify_accepts_one_good_entry_among_several(order: str) -> None:
    good, old = v1(SECRET, BODY, T), v1("whsec_old", BODY, T)
    entries = [good, old] if order == "good_first" else [old, good]
    assert verify(header_with(f"t={T}", *entries), SECRET, BODY, now=T)


def test_verify_ignores_other_schemes_and_spaces() -> None:
    header = header_with(f"t={T}", " v0=deadbeef", f" {v1(SECRET, BODY, T)}")
    assert verify(header, SECRET, BODY, now=T)


@pytest.mark.parametrize("header", [
    "",
    "garbage",
    f"{v1(SECRET, BODY, T)}",                                    # no t
    f"t={T}",                                                    # no v1
    f"t={T},v0=deadbeef",                                        # no v1, only another scheme
    f"t={T},t={T},{v1(SECRET, BODY, T)}",                        # two t
    f"t=abc,{v1(SECRET, BODY, T)}",                              # t not a number
    f"t=-{T},{v1(SECRET, BODY, T)}",                             # t negative
    f"t=\N{ARABIC-INDIC DIGIT ONE},{v1(SECRET, BODY, T)}",       # t non-ASCII digit
    f"t={T},v1=",                                                # empty v1
    f"t={T},{v1(SECRET, BODY, T)},junk",                         # a part without '='
    f"t={T},v1=\N{SNOWMAN}",                                     # v1 not hex, not ASCII
])
def test_verify_refuses_malformed_headers(header: str) -> None:
    assert not verify(header, SECRET, BODY, now=T)


def test_verify_compares_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    header = header_with(f"t={T}", v1(SECRET, BODY, T), v1("whsec_old", BODY, T))
    assert verify(header, SECRET, BODY, now=T)
    assert len(compared) == 2


def test_new_secrets_are_prefixed_random_and_long() -> None:
    secrets_made = {new_secret() for _ in range(50)}
    assert len(secrets_made) == 50
    for secret in secrets_made:
        assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{43}", secret)


def test_new_event_ids_are_prefixed_and_random() -> None:
    ids = {new_event_id() for _ in range(50)}
    assert len(ids) == 50
    for event_id in ids:
        assert re.fullmatch(r"evt_[0-9a-f]{32}", event_id)
