"""Which addresses a fetch of a caller-chosen URL may reach.

A caller who names a URL the worker fetches (audio_url; later webhooks) must not be able to make
the worker read its own network: the API's /metrics, PostgreSQL, a cloud metadata service, the
worker's metrics port. So a host is resolved once, every address it resolves to is vetted, and
the connection goes to a vetted address (see providers/http.py), leaving no window for DNS
rebinding between the check and the connect. Internal sources an operator does want fetched
(an S3/MinIO gateway) are opened by an allow-list of host names and CIDRs.

Literal addresses are read here in every spelling a resolver accepts (2130706433, 0x7f.1,
0177.0.0.1, ::ffff:127.0.0.1, a trailing dot) so their verdict never depends on the resolver;
what a resolver returns is vetted all the same.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# The first rule an address meets names the refusal. Reserved comes before private because
# Python counts 240.0.0.0/4 as private; the last rule catches the rest that is not routable
# on the internet (shared 100.64.0.0/10, documentation and benchmark ranges).
_RULES: tuple[tuple[str, Callable[[IPAddress], bool]], ...] = (
    ("loopback", lambda ip: ip.is_loopback),
    ("unspecified", lambda ip: ip.is_unspecified),
    ("link-local", lambda ip: ip.is_link_local),
    ("multicast", lambda ip: ip.is_multicast),
    ("site-local", lambda ip: isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    ("reserved", lambda ip: ip.is_reserved),
    ("private", lambda ip: ip.is_private),
    ("non-public", lambda ip: not ip.is_global),
)

# IPv6 ranges that carry an IPv4 address a packet ends up at: IPv4-compatible (::/96),
# NAT64 (RFC 6052) and its local-use range (RFC 8215), whose last 32 bits are the target.
_V4_IN_LAST_32_BITS = (
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)

_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
                        r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_IPV4_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$")


class RefusedAddress(Exception):
    """The host is internal and the allow-list does not open it; the message names the rule.

    Not an OSError on purpose: urllib3 and requests pass it through untouched instead of
    retrying it or folding it into a connection error."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host, in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def normalize_host(host: str) -> str:
    """How a URL's host is compared: no brackets, no trailing dots, lower case."""
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address a literal host spells, in any spelling inet_aton or an IPv6 parser takes;
    None for a host name."""
    host = normalize_host(host)
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _ipv4_literal(host)


def _ipv4_literal(host: str) -> ipaddress.IPv4Address | None:
    """'127.0.0.1', '127.1', '2130706433', '0x7f.1', '0177.0.0.1' as inet_aton reads them."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.match(part) for part in parts):
        return None
    numbers = [_ipv4_number(part) for part in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address delivers to: mapped, compatible, 6to4, NAT64, Teredo."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _V4_IN_LAST_32_BITS) and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def internal_kind(ip: IPAddress) -> str | None:
    """The rule that makes an address internal ('loopback', 'private', ...), None if public.
    An IPv6 address that embeds an IPv4 one is judged by where it delivers."""
    target = embedded_ipv4(ip) or ip
    for kind, applies in _RULES:
        if applies(target):
            return kind
    return None


def parse_allow_list(text: str) -> tuple[str, ...]:
    """'minio, 10.20.0.0/16, 127.0.0.1' → its entries; ValueError naming a bad one."""
    entries = []
    for raw in filter(None, (part.strip() for part in text.split(","))):
        entry = normalize_host(raw)
        if _network(entry) is None and not _HOST_NAME.match(entry):
            raise ValueError(f"not a host name, address or CIDR: {raw!r}")
        entries.append(entry)
    return tuple(entries)


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class Refusal:
    host: str
    address: IPAddress
    kind: str

    def describe(self) -> str:
        article = "an" if self.kind[0] in "aeiou" else "a"
        target = embedded_ipv4(self.address) or self.address  # what the rule was applied to
        if self.host == str(target):
            return f"{self.host} is {article} {self.kind} address"
        if literal_address(self.host) is not None:  # another spelling of the address
            return f"{self.host} is {target}, {article} {self.kind} address"
        return f"{self.host} resolves to {target}, {article} {self.kind} address"


class UrlPolicy:
    """Vets the host of a caller-chosen URL. `allow` holds host names and CIDRs that open
    internal sources; `setting` is the variable operators set it with, named in refusals."""

    def __init__(self, allow: Iterable[str] = (), setting: str = "the allow-list",
                 resolver: Resolver = system_resolver) -> None:
        entries = parse_allow_list(",".join(allow))
        self.allowed_names = frozenset(e for e in entries if _network(e) is None)
        self.allowed_networks = tuple(n for e in entries if (n := _network(e)) is not None)
        self.setting = setting
        self._resolve = resolver

    def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for host: all of them vetted, else RefusedAddress.
        Resolution failures raise socket.gaierror, as a plain connect would."""
        name = normalize_host(host)
        literal = literal_address(name)
        if literal is not None:
            self.vet(name, literal)
            return [str(literal)]
        found = self._resolve(name, port)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        if name not in self.allowed_names:
            for address in found:
                self.vet(name, ipaddress.ip_address(address.split("%")[0]))
        return found

    def vet(self, host: str, ip: IPAddress) -> None:
        if self._allowed(ip):
            return
        kind = internal_kind(ip)
        if kind is not None:
            refusal = Refusal(host, ip, kind).describe()
            raise RefusedAddress(f"{refusal}; {self.setting} opens internal sources")

    def _allowed(self, ip: IPAddress) -> bool:
        candidates = [ip] + [e for e in [embedded_ipv4(ip)] if e is not None]
        return any(c in network for c in candidates for network in self.allowed_networks
                   if c.version == network.version)
