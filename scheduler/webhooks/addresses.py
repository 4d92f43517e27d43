"""The address rule of webhook URLs: `https://` and public addresses only.

A webhook makes this service send requests to a URL a workspace chose. Without this rule a
workspace could point it at the service's own network (a database, an admin port, the cloud
metadata service that hands out credentials): server-side request forgery. So a URL is
refused unless its scheme is `https`, it carries no credentials, and every address its host
resolves to is public. "Every": a name with one public and one private answer is refused,
because the connection may use either.

`BACKFILL_WEBHOOK_ALLOW_PRIVATE=true` (`allow_private`) is for tests and on-premises
deployments whose receivers live on the operator's own network. It lifts the address rule
entirely, the cloud metadata addresses included, and also allows `http://`; the URL's shape
is still checked and its host must still resolve. The metadata addresses are not kept
refused under the flag: DESIGN.md makes the flag the exception to "resolve to public
addresses" as a whole, and a deployment that needs them blocked beside private receivers
blocks them in its egress policy, where every outgoing connection is covered, not only
webhooks.

DNS can change between registration and delivery (or be made to, on purpose: DNS
rebinding). The registry checks a URL when it is added and the delivery loop calls
`check_url` again before every attempt; it should then connect to one of
`CheckedUrl.addresses` (sending `host` as the Host header and TLS server name) rather than
let the HTTP client resolve the name a second time.

Refusals name the problem and, for a resolved name, the class of the address but not the
address itself: a workspace must not learn how the service's internal names resolve.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from shared.errors import InvalidInput

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

# AWS, GCP and Azure (169.254.169.254), AWS over IPv6 (fd00:ec2::254), Alibaba Cloud
# (100.100.100.200). Each is also in a refused class; naming them makes the message precise.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text) for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"))
CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")

_DEFAULT_PORTS = {"https": 443, "http": 80}
# Letters, digits, '-' and '_' (found in real names), dot-separated. Anything else (a
# backslash, '%', brackets) is a place where URL parsers disagree about the host.
_HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class InvalidWebhookUrl(InvalidInput):
    """The webhook URL was refused."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"url: {problem}")


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the rule: `url` is normalised (lowercase scheme and host, the host in
    IDNA ASCII form, no default port, no fragment: a fragment is never sent)."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, waiting at most RESOLVE_TIMEOUT_S.

    `getaddrinfo` takes no timeout and cannot be interrupted, so it runs in a daemon thread
    that is abandoned on timeout; it ends when the system resolver gives up (its own timeouts
    bound that), and being a daemon it never holds up the process's exit.
    """
    answers: queue.SimpleQueue[list[str] | OSError] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            answers.put(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except OSError as exc:
            answers.put(exc)

    threading.Thread(target=lookup, name="webhook-resolve", daemon=True).start()
    try:
        outcome = answers.get(timeout=RESOLVE_TIMEOUT_S)
    except queue.Empty:
        raise TimeoutError(f"no answer within {RESOLVE_TIMEOUT_S:g} s") from None
    if isinstance(outcome, OSError):
        raise outcome
    return outcome


def check_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolve
              ) -> CheckedUrl:
    """The checked URL, or InvalidWebhookUrl naming the problem (see the module docstring)."""
    parts = _split(url)
    scheme = _scheme(parts, allow_private)
    if "@" in parts.netloc:
        raise InvalidWebhookUrl("credentials (user:password@) are not allowed in the URL")
    host, literal = _host(parts)
    explicit_port = _explicit_port(parts.netloc)
    port = explicit_port or _DEFAULT_PORTS[scheme]
    addresses = [literal] if literal is not None else _resolve(host, port, resolve)
    if not allow_private:
        _require_public(host, addresses, literal is not None)
    return CheckedUrl(_normalised(parts, scheme, host, explicit_port), host, port,
                      tuple(str(address) for address in addresses))


def non_public_reason(address: IPAddress) -> str | None:
    """Why `address` is not public ("a private address", …), or None when it is."""
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4-mapped address is that IPv4 address on a dual-stack socket: judge it as such.
        if address.ipv4_mapped is not None:
            return non_public_reason(address.ipv4_mapped)
        embedded = _embedded_reason(address)
        if embedded is not None:
            return embedded
    return _class_reason(address)


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"longer than {MAX_URL_LENGTH} characters")
    # urlsplit silently drops tabs and newlines, and other parsers treat spaces differently:
    # refusing them keeps every parser on the same host.
    if any(char.isspace() or not char.isprintable() for char in url):
        raise InvalidWebhookUrl("contains whitespace or control characters")
    try:
        return urlsplit(url)
    except ValueError:
        raise InvalidWebhookUrl("not a valid URL") from None


def _scheme(parts: SplitResult, allow_private: bool) -> str:
    if parts.scheme == "https" or (parts.scheme == "http" and allow_private):
        return parts.scheme
    if parts.scheme == "http":
        raise InvalidWebhookUrl(
            "must use https:// (http:// needs BACKFILL_WEBHOOK_ALLOW_PRIVATE=true)")
    allowed = "https or http" if allow_private else "https"
    raise InvalidWebhookUrl(f"scheme must be {allowed}")


def _host(parts: SplitResult) -> tuple[str, IPAddress | None]:
    """The host in its normal form, and its address when the host is an IP literal."""
    if not parts.hostname:
        raise InvalidWebhookUrl("a host is required")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return _hostname(parts.hostname), None
    # A zone id ("%eth0") names an interface of this machine, not a place on the internet.
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
        raise InvalidWebhookUrl("an IPv6 zone id is not allowed in the host")
    return str(literal), literal


def _hostname(name: str) -> str:
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidWebhookUrl("host is not a valid name") from None
    if not _HOSTNAME.fullmatch(ascii_name):
        raise InvalidWebhookUrl("host is not a valid name")
    return ascii_name


def _explicit_port(netloc: str) -> int | None:
    # Read the digits ourselves: urlsplit's `port` accepts non-ASCII digits and port 0.
    after_host = netloc.rpartition("]")[2] if netloc.startswith("[") else netloc
    text = after_host.partition(":")[2]
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise InvalidWebhookUrl("port must be a number from 1 to 65535")
    return int(text)


def _normalised(parts: SplitResult, scheme: str, host: str, explicit_port: int | None) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if explicit_port is not None and explicit_port != _DEFAULT_PORTS[scheme]:
        netloc += f":{explicit_port}"
    return SplitResult(scheme, netloc, parts.path or "/", parts.query, "").geturl()


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        answers = resolve(host, port)
    except TimeoutError:
        raise InvalidWebhookUrl(f"host {host} does not resolve (no answer in time)") from None
    except OSError:
        raise InvalidWebhookUrl(f"host {host} does not resolve") from None
    if not answers:
        raise InvalidWebhookUrl(f"host {host} does not resolve")
    return [ipaddress.ip_address(answer) for answer in answers]


def _require_public(host: str, addresses: list[IPAddress], literal: bool) -> None:
    for address in addresses:
        reason = non_public_reason(address)
        if reason is None:
            continue
        if literal:
            raise InvalidWebhookUrl(f"{host} is {reason}; webhooks reach public addresses only")
        raise InvalidWebhookUrl(
            f"host {host} resolves to {reason}; webhooks reach public addresses only")


def _embedded_reason(address: ipaddress.IPv6Address) -> str | None:
    # 6to4 and Teredo addresses carry IPv4 addresses a relay forwards to. NAT64
    # (64:ff9b::/96) needs no case: ipaddress reports ::/8 as reserved, so it is refused
    # whatever it embeds.
    embedded: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        embedded.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        embedded += [("Teredo", inner) for inner in address.teredo]
    for tunnel, inner in embedded:
        reason = non_public_reason(inner)
        if reason is not None:
            return f"a {tunnel} address embedding {reason}"
    return None


def _class_reason(address: IPAddress) -> str | None:
    # Most specific first, so the message names the class an operator recognises.
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in CARRIER_GRADE_NAT, "a carrier-grade NAT address"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
         "a site-local address"),
        # Not globally reachable (RFC 1918, fc00::/7, documentation and benchmark ranges, …):
        # stricter than `is_private`, which leaves some special-purpose ranges out.
        (not address.is_global, "a private address"),
        # IETF-reserved IPv6 space (::/8, 4000::/3, ...) counts as global to ipaddress.
        (address.is_reserved, "a reserved address"),
    )
    return next((reason for refused, reason in checks if refused), None)
