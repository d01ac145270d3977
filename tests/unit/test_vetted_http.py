"""Sessions that reach only vetted addresses, and the total deadline of a provider call,
against a real HTTP source on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from ai_service.netpolicy import RefusedAddress, UrlPolicy
from ai_service.providers.http import (
    Aborted,
    AbortSignal,
    ProviderError,
    _deadlines,
    abortable,
    classify_exception,
    make_session,
    total_deadline,
)
from tests.support.audio_source import AudioSource

SLACK = 5.0  # generous: the machine may be busy; what matters is "not 30 s"


@pytest.fixture
def source() -> Iterator[AudioSource]:
    with AudioSource() as server:
        server.audio["a.wav"] = b"RIFF-audio"
        yield server


class CountingResolver:
    """Resolves every name to 127.0.0.1 and counts the lookups."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return ["127.0.0.1"]


def test_a_refused_host_is_never_connected_to(source: AudioSource) -> None:
    session = make_session(UrlPolicy((), "AUDIO_URL_ALLOW"))
    for host in ("127.0.0.1", "0.0.0.0", "2130706433", "localhost"):
        with pytest.raises(RefusedAddress):
            session.get(f"http://{host}:{source.port}/audio/a.wav", timeout=5)
    assert source.paths == []


def test_the_connection_goes_to_the_vetted_address_under_the_original_name(
    source: AudioSource,
) -> None:
    resolver = CountingResolver()
    session = make_session(UrlPolicy(["127.0.0.1"], "AUDIO_URL_ALLOW", resolver=resolver))
    response = session.get(f"http://audio.test:{source.port}/audio/a.wav", timeout=5)
    # audio.test exists only in the policy's resolver: the socket went where it said.
    assert response.content == b"RIFF-audio"
    assert source.hosts == [f"audio.test:{source.port}"]
    assert resolver.lookups == ["audio.test"]  # once: no second lookup to rebind


def test_a_session_without_a_policy_reaches_the_operators_internal_urls(
    source: AudioSource,
) -> None:
    response = make_session().get(f"{source.root_url}/audio/a.wav", timeout=5)
    assert response.content == b"RIFF-audio"


def call_with_deadline(url: str, seconds: float, signal: AbortSignal) -> bytes:
    with total_deadline(signal, seconds), abortable(signal):
        try:
            with make_session().get(url, stream=True, timeout=(5, 30)) as response:
                return b"".join(response.iter_content(1))
        except requests.RequestException as exc:
            raise classify_exception(exc, signal) from None


@pytest.mark.parametrize("path", ["/dribble", "/dribble-sized"])
def test_a_dribbling_source_ends_as_a_timeout_at_the_total_deadline(
    source: AudioSource, path: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as failed:
        call_with_deadline(source.root_url + path, 1.0, AbortSignal())
    assert failed.value.category == "timeout" and failed.value.retryable
    assert time.monotonic() - started < 1.0 + SLACK


def test_an_abort_within_the_deadline_still_ends_as_aborted(source: AudioSource) -> None:
    signal = AbortSignal()
    threading.Timer(0.5, signal.abort).start()
    with pytest.raises(Aborted):
        call_with_deadline(source.root_url + "/dribble", 30.0, signal)


def test_a_call_that_finishes_in_time_is_untouched_and_its_deadline_is_gone(
    source: AudioSource,
) -> None:
    signal = AbortSignal()
    pending_before = _deadlines.pending()
    assert call_with_deadline(source.root_url + "/audio/a.wav", 30.0, signal) == b"RIFF-audio"
    assert not signal.expired
    assert _deadlines.pending() == pending_before


def test_calls_share_one_deadline_thread_and_each_meets_its_own_deadline(
    source: AudioSource,
) -> None:
    quick, slow = AbortSignal(), AbortSignal()
    with total_deadline(slow, 30.0):
        with pytest.raises(ProviderError, match="^timeout: "):
            call_with_deadline(source.root_url + "/dribble", 0.5, quick)
        assert not slow.expired
    assert [t.name for t in threading.enumerate()].count("deadlines") == 1


def test_a_request_started_after_the_deadline_is_not_sent(source: AudioSource) -> None:
    signal = AbortSignal()
    signal.expire()
    with pytest.raises(ProviderError, match="timeout"), abortable(signal):
        make_session().get(source.root_url + "/audio/a.wav", timeout=5)
    assert source.paths == []


def test_a_name_that_does_not_resolve_fails_as_a_connection_error() -> None:
    def nothing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    session = make_session(UrlPolicy((), "AUDIO_URL_ALLOW", resolver=nothing))
    with pytest.raises(requests.ConnectionError):
        session.get("http://nowhere.test/a.wav", timeout=5)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for audio.test only (not for 127.0.0.1)."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=audio.test", "-addext", "subjectAltName=DNS:audio.test",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_checks_the_certificate_against_the_url_name_not_the_vetted_address(
    certificate: tuple[str, str],
) -> None:
    names = {"audio.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    policy = UrlPolicy(["127.0.0.1"], "AUDIO_URL_ALLOW", resolver=lambda h, p: names[h])
    with AudioSource(tls=certificate) as tls_source:
        tls_source.audio["a.wav"] = b"RIFF-tls"
        session = make_session(policy)
        url = f"https://audio.test:{tls_source.port}/audio/a.wav"
        assert session.get(url, timeout=5, verify=certificate[0]).content == b"RIFF-tls"
        with pytest.raises(requests.exceptions.SSLError):
            session.get(url.replace("audio.test", "other.test"), timeout=5,
                        verify=certificate[0])


@pytest.mark.parametrize(("stop", "ends_as", "match"), [
    (AbortSignal.expire, ProviderError, "^timeout: "),
    (AbortSignal.abort, Aborted, "abandoned|aborted"),
])
def test_a_deadline_or_abort_that_comes_while_connecting_still_cuts_the_call(
    source: AudioSource, stop: Callable[[AbortSignal], None], ends_as: type[Exception],
    match: str,
) -> None:
    signal = AbortSignal()

    def resolve_as_the_time_runs_out(host: str, port: int) -> list[str]:
        stop(signal)  # before any socket exists to cut
        return ["127.0.0.1"]

    policy = UrlPolicy(["127.0.0.1"], "AUDIO_URL_ALLOW", resolver=resolve_as_the_time_runs_out)
    started = time.monotonic()
    with pytest.raises(ends_as, match=match), total_deadline(signal, 30.0), abortable(signal):
        try:
            with make_session(policy).get(f"http://audio.test:{source.port}/dribble",
                                          stream=True, timeout=(5, 30)) as response:
                b"".join(response.iter_content(1))
        except requests.RequestException as exc:
            raise classify_exception(exc, signal) from None
    assert time.monotonic() - started < SLACK
