"""The URL policy: which hosts a caller-chosen URL may reach, in every spelling of an address.
No network: names resolve through a table, and literal addresses must not reach it at all."""

from __future__ import annotations

import socket

import pytest

from ai_service.netpolicy import RefusedAddress, UrlPolicy, parse_allow_list

NAMES = {
    "localhost": ["127.0.0.1", "::1"],
    "metadata.internal": ["169.254.169.254"],
    "audio.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    "rebound.example.com": ["93.184.216.34", "10.0.0.7"],
    "minio": ["10.20.0.5"],
}


def table_resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test's table")
    return NAMES[host]


def policy(*allow: str) -> UrlPolicy:
    return UrlPolicy(allow, "AUDIO_URL_ALLOW", resolver=table_resolver)


@pytest.mark.parametrize(("host", "kind"), [
    ("127.0.0.1", "loopback"),
    ("127.0.0.1.", "loopback"),
    ("127.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0X7F.0.0.1", "loopback"),
    ("0x7f.1", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.01", "loopback"),
    ("[::1]", "loopback"),
    ("0:0:0:0:0:0:0:1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("[::ffff:7f00:1]", "loopback"),
    ("::127.0.0.1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    ("64:ff9b::127.0.0.1", "loopback"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("::", "unspecified"),
    ("[::]", "unspecified"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("[fe80::1%25eth0]", "link-local"),
    ("::ffff:169.254.169.254", "link-local"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("fec0::1", "site-local"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("10.0.0.1", "private"),
    ("012.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("0xc0a80101", "private"),
    ("fd12:3456::1", "private"),
    ("64:ff9b::10.0.0.1", "private"),
    ("100.64.0.1", "non-public"),
])
def test_internal_addresses_are_refused_in_every_spelling_without_a_lookup(
    host: str, kind: str
) -> None:
    with pytest.raises(RefusedAddress, match=f" {kind} address; AUDIO_URL_ALLOW opens"):
        policy().addresses(host, 80)


def test_a_refusal_names_the_spelling_and_the_address_it_means() -> None:
    with pytest.raises(RefusedAddress) as refused:
        policy().addresses("2130706433", 80)
    assert str(refused.value) == (
        "2130706433 is 127.0.0.1, a loopback address; AUDIO_URL_ALLOW opens internal sources"
    )


@pytest.mark.parametrize(("host", "message"), [
    ("localhost", "localhost resolves to 127.0.0.1, a loopback address"),
    ("LocalHost.", "localhost resolves to 127.0.0.1, a loopback address"),
    ("metadata.internal", "metadata.internal resolves to 169.254.169.254, a link-local address"),
    ("rebound.example.com", "rebound.example.com resolves to 10.0.0.7, a private address"),
])
def test_a_name_is_refused_when_any_address_it_resolves_to_is_internal(
    host: str, message: str
) -> None:
    with pytest.raises(RefusedAddress, match=message):
        policy().addresses(host, 80)


@pytest.mark.parametrize(("host", "addresses"), [
    ("audio.example.com", NAMES["audio.example.com"]),
    ("AUDIO.example.com.", NAMES["audio.example.com"]),
    ("93.184.216.34", ["93.184.216.34"]),
    ("1572395042", ["93.184.216.34"]),
    ("[2606:2800:220:1:248:1893:25c8:1946]", ["2606:2800:220:1:248:1893:25c8:1946"]),
])
def test_public_hosts_pass_with_the_addresses_to_connect_to(
    host: str, addresses: list[str]
) -> None:
    assert policy().addresses(host, 443) == addresses


def test_an_unresolvable_name_fails_as_a_lookup_failure_not_a_refusal() -> None:
    with pytest.raises(socket.gaierror):
        policy().addresses("nowhere.example.com", 80)


@pytest.mark.parametrize(("allow", "host", "addresses"), [
    (["127.0.0.1"], "127.0.0.1", ["127.0.0.1"]),
    (["127.0.0.1"], "2130706433", ["127.0.0.1"]),
    (["127.0.0.1"], "::ffff:127.0.0.1", ["::ffff:7f00:1"]),
    (["10.20.0.0/16"], "10.20.3.4", ["10.20.3.4"]),
    (["10.20.0.0/16"], "minio", ["10.20.0.5"]),
    (["minio"], "minio", ["10.20.0.5"]),
    (["MINIO."], "Minio", ["10.20.0.5"]),
    (["::1"], "[::1]", ["::1"]),
])
def test_the_allow_list_opens_chosen_hosts_and_networks(
    allow: list[str], host: str, addresses: list[str]
) -> None:
    assert policy(*allow).addresses(host, 9000) == addresses


@pytest.mark.parametrize(("allow", "host"), [
    (["127.0.0.1"], "127.0.0.2"),
    (["127.0.0.1"], "localhost"),  # it also resolves to ::1, which is not open
    (["10.20.0.0/16"], "10.21.0.1"),
    (["minio"], "10.20.0.5"),  # a name opens the name, not its address
    (["minio"], "minio.evil.example.com"),
])
def test_the_allow_list_opens_nothing_beyond_its_entries(allow: list[str], host: str) -> None:
    with pytest.raises((RefusedAddress, socket.gaierror)):
        policy(*allow).addresses(host, 80)


def test_the_allow_list_reads_hosts_addresses_and_cidrs() -> None:
    assert parse_allow_list(" minio , 10.0.0.0/8,127.0.0.1,[::1], S3.internal. ,") == (
        "minio", "10.0.0.0/8", "127.0.0.1", "::1", "s3.internal",
    )


@pytest.mark.parametrize("entry", ["http://minio", "10.0.0.0/33", "two words", "minio:9000"])
def test_the_allow_list_rejects_what_is_not_a_host_or_cidr(entry: str) -> None:
    with pytest.raises(ValueError, match="not a host name, address or CIDR"):
        parse_allow_list(f"minio,{entry}")
