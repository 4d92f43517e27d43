"""The webhook URL rule: https, no credentials, every resolved address public. Names are
resolved by an injected resolver: no test touches real DNS."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any

import pytest

from scheduler.webhooks import addresses
from scheduler.webhooks.addresses import CheckedUrl, InvalidWebhookUrl, check_url, system_resolve
from shared.errors import InvalidInput

PUBLIC = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

# A Teredo address whose server is 10.0.0.1 (the client part is all ones once de-obfuscated).
TEREDO_PRIVATE_SERVER = "2001:0:a00:1::"

REFUSED = [
    ("10.0.0.1", "a private address"),
    ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("fd12:3456::1", "a private address"),
    ("127.0.0.1", "a loopback address"),
    ("127.255.0.9", "a loopback address"),
    ("::1", "a loopback address"),
    ("169.254.10.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a private address"),  # 240/4 is listed as private by ipaddress
    ("100.64.0.1", "a carrier-grade NAT address"),
    ("100.127.255.254", "a carrier-grade NAT address"),
    ("fec0::1", "a site-local address"),
    ("4000::1", "a reserved address"),
    ("192.0.2.10", "a private address"),  # documentation range
    ("::ffff:10.0.0.1", "a private address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("::ffff:100.64.0.1", "a carrier-grade NAT address"),
    ("2002:a00:1::1", "a 6to4 address embedding a private address"),
    ("2002:7f00:1::1", "a 6to4 address embedding a loopback address"),
    ("2002:a9fe:a9fe::1", "a 6to4 address embedding a cloud metadata address"),
    (TEREDO_PRIVATE_SERVER, "a Teredo address embedding a private address"),
    ("64:ff9b::a00:1", "a reserved address"),  # NAT64 of 10.0.0.1
]


class FakeDns:
    """Answers from a table; a name it does not know does not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


def no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host} although it needed no resolving")


DNS = FakeDns({"hooks.example.com": [PUBLIC], "xn--bcher-kva.example": [PUBLIC]})


def refusal(url: str, *, allow_private: bool = False, resolve: Any = DNS) -> str:
    with pytest.raises(InvalidWebhookUrl) as caught:
        check_url(url, allow_private=allow_private, resolve=resolve)
    message = str(caught.value)
    assert message.startswith("url: ")
    return message


def literal_url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}/hook"


def test_a_public_https_url_passes() -> None:
    dns = FakeDns({"hooks.example.com": [PUBLIC, PUBLIC_V6]})
    checked = check_url("https://hooks.example.com/hook?x=1", allow_private=False, resolve=dns)
    assert checked == CheckedUrl("https://hooks.example.com/hook?x=1", "hooks.example.com", 443,
                                 (PUBLIC, PUBLIC_V6))
    assert dns.calls == [("hooks.example.com", 443)]


def test_the_url_is_normalised() -> None:
    checked = check_url("HTTPS://Hooks.Example.COM:443#fragment", allow_private=False,
                        resolve=DNS)
    assert checked.url == "https://hooks.example.com/"


def test_a_non_default_port_is_kept_and_resolved_with() -> None:
    dns = FakeDns({"hooks.example.com": [PUBLIC]})
    checked = check_url("https://hooks.example.com:8443/h", allow_private=False, resolve=dns)
    assert (checked.url, checked.port) == ("https://hooks.example.com:8443/h", 8443)
    assert dns.calls == [("hooks.example.com", 8443)]


def test_an_international_host_is_sent_in_ascii() -> None:
    checked = check_url("https://bücher.example/h", allow_private=False, resolve=DNS)
    assert checked.host == "xn--bcher-kva.example"
    assert checked.url == "https://xn--bcher-kva.example/h"


def test_a_public_ip_literal_passes_without_resolving() -> None:
    checked = check_url(f"https://[{PUBLIC_V6}]:8443/h", allow_private=False, resolve=no_dns)
    assert checked.url == f"https://[{PUBLIC_V6}]:8443/h"
    assert checked.addresses == (PUBLIC_V6,)


def test_an_ipv4_mapped_public_address_passes() -> None:
    checked = check_url(f"https://[::ffff:{PUBLIC}]/", allow_private=False, resolve=no_dns)
    assert checked.addresses == (str(ipaddress.ip_address(f"::ffff:{PUBLIC}")),)


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_a_non_public_literal_is_refused(address: str, reason: str) -> None:
    message = refusal(literal_url(address), resolve=no_dns)
    assert f"is {reason};" in message


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_a_name_resolving_to_a_non_public_address_is_refused(address: str, reason: str) -> None:
    message = refusal("https://inside.example/hook",
                      resolve=FakeDns({"inside.example": [address]}))
    assert f"host inside.example resolves to {reason};" in message
    # A workspace must not learn how internal names resolve.
    assert address not in message.removeprefix("url: host inside.example")


@pytest.mark.parametrize("answers", [[PUBLIC, "10.0.0.1"], ["10.0.0.1", PUBLIC],
                                     [PUBLIC_V6, "fd00::1"]])
def test_one_private_answer_among_public_ones_is_refused(answers: list[str]) -> None:
    message = refusal("https://mixed.example/", resolve=FakeDns({"mixed.example": answers}))
    assert "a private address" in message


def test_a_dns_change_is_caught_when_checked_again() -> None:
    dns = FakeDns({"moving.example": [PUBLIC]})
    check_url("https://moving.example/", allow_private=False, resolve=dns)
    dns.table["moving.example"] = ["127.0.0.1"]
    assert "a loopback address" in refusal("https://moving.example/", resolve=dns)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert refusal("https://nowhere.example/") == "url: host nowhere.example does not resolve"


def test_a_name_with_no_addresses_is_refused() -> None:
    message = refusal("https://empty.example/", resolve=FakeDns({"empty.example": []}))
    assert message == "url: host empty.example does not resolve"


def test_a_resolver_timeout_is_refused() -> None:
    def slow(host: str, port: int) -> list[str]:
        raise TimeoutError("no answer")

    assert "does not resolve (no answer in time)" in refusal("https://slow.example/",
                                                             resolve=slow)


def test_a_name_that_does_not_resolve_is_refused_even_when_private_is_allowed() -> None:
    assert "does not resolve" in refusal("http://nowhere.example/", allow_private=True)


@pytest.mark.parametrize("url", ["https://user:hunter2@hooks.example.com/",
                                 "https://tok3n@hooks.example.com/",
                                 "https://:hunter2@hooks.example.com/"])
def test_credentials_are_refused_without_being_echoed(url: str) -> None:
    message = refusal(url)
    assert "credentials" in message
    assert "hunter2" not in message and "tok3n" not in message


@pytest.mark.parametrize("allow_private", [False, True])
def test_ftp_is_refused(allow_private: bool) -> None:
    assert "scheme must be" in refusal("ftp://hooks.example.com/", allow_private=allow_private)


@pytest.mark.parametrize("url", ["hooks.example.com/hook", "//hooks.example.com/hook",
                                 "file:///etc/passwd", "gopher://hooks.example.com/"])
def test_other_schemes_and_none_are_refused(url: str) -> None:
    assert refusal(url) == "url: scheme must be https"


def test_http_is_refused_unless_private_is_allowed() -> None:
    assert "BACKFILL_WEBHOOK_ALLOW_PRIVATE" in refusal("http://hooks.example.com/")
    checked = check_url("http://hooks.example.com/", allow_private=True, resolve=DNS)
    assert (checked.url, checked.port) == ("http://hooks.example.com/", 80)


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "::1", "169.254.169.254",
                                     "fd00:ec2::254"])
def test_allow_private_lifts_the_address_rule_entirely(address: str) -> None:
    # The documented decision: the flag lifts the whole rule, metadata addresses included.
    checked = check_url(literal_url(address).replace("https", "http"), allow_private=True,
                        resolve=no_dns)
    assert checked.addresses == (str(ipaddress.ip_address(address)),)


def test_a_url_of_2048_characters_passes_and_2049_is_refused() -> None:
    base = "https://hooks.example.com/"
    longest = base + "a" * (2048 - len(base))
    assert check_url(longest, allow_private=False, resolve=DNS).url == longest
    assert refusal(longest + "a") == "url: longer than 2048 characters"


@pytest.mark.parametrize("url", ["https:///hook", "https://:443/hook", "https://"])
def test_a_host_is_required(url: str) -> None:
    assert refusal(url) == "url: a host is required"


@pytest.mark.parametrize("port", ["0", "65536", "99999", "abc", "-1", "443:80",
                                  "\N{ARABIC-INDIC DIGIT EIGHT}"])
def test_a_bad_port_is_refused(port: str) -> None:
    message = refusal(f"https://hooks.example.com:{port}/")
    assert message == "url: port must be a number from 1 to 65535"


def test_the_edge_ports_pass() -> None:
    for port in (1, 65535):
        assert check_url(f"https://hooks.example.com:{port}/", allow_private=False,
                         resolve=DNS).port == port


def test_a_bad_port_after_an_ipv6_literal_is_refused() -> None:
    assert "port must be" in refusal(f"https://[{PUBLIC_V6}]:0/", resolve=no_dns)


@pytest.mark.parametrize("url", ["https://hooks .example.com/", "https://hooks.example.com/\n",
                                 "https://hooks.example.com/\tx", "https://hooks.example.com/\x00",
                                 " https://hooks.example.com/",
                                 "https://hooks.example.com/\N{ZERO WIDTH SPACE}"])
def test_whitespace_and_control_characters_are_refused(url: str) -> None:
    assert refusal(url) == "url: contains whitespace or control characters"


@pytest.mark.parametrize("url", ["https://a\\b.example/", "https://a%2fb.example/",
                                 "https://" + "a" * 64 + ".example/"])
def test_a_host_that_is_not_a_name_is_refused(url: str) -> None:
    assert refusal(url) == "url: host is not a valid name"


def test_an_unparsable_url_is_refused() -> None:
    assert refusal("https://[::1/") == "url: not a valid URL"


def test_an_ipv6_zone_id_is_refused() -> None:
    message = refusal("https://[fe80::1%25eth0]/", allow_private=True, resolve=no_dns)
    assert message == "url: an IPv6 zone id is not allowed in the host"


def test_refusals_are_invalid_input() -> None:
    # So the CLI exits 2 and the API answers 422.
    assert issubclass(InvalidWebhookUrl, InvalidInput)
    error = InvalidWebhookUrl("a host is required")
    assert error.problem == "a host is required"


def test_system_resolve_returns_each_address_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: int, **_: Any) -> list[Any]:
        assert (host, port) == ("hooks.example.com", 443)
        tcp = (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, port))
        tcp6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (PUBLIC_V6, port, 0, 0))
        return [tcp, tcp6, tcp]

    monkeypatch.setattr(addresses.socket, "getaddrinfo", fake_getaddrinfo)
    assert system_resolve("hooks.example.com", 443) == [PUBLIC, PUBLIC_V6]


def test_system_resolve_passes_resolver_errors_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(host: str, port: int, **_: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(addresses.socket, "getaddrinfo", failing)
    with pytest.raises(socket.gaierror):
        system_resolve("nowhere.example", 443)


def test_system_resolve_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hanging(host: str, port: int, **_: Any) -> list[Any]:
        release.wait(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(addresses.socket, "getaddrinfo", hanging)
    monkeypatch.setattr(addresses, "RESOLVE_TIMEOUT_S", 0.05)
    try:
        with pytest.raises(TimeoutError):
            system_resolve("slow.example", 443)
    finally:
        release.set()


def test_system_resolve_reads_a_numeric_host_without_dns() -> None:
    # A numeric host is parsed by getaddrinfo itself, so this touches no network.
    assert system_resolve("127.0.0.1", 443) == ["127.0.0.1"]
