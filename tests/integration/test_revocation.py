"""A revoked token stops working at once in a process that had it cached: revoke_token NOTIFYs,
each process's listener retires its cache, and while the listener is not delivering (not yet
connected, cut off, reconnecting) the cache is not trusted at all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from ai_service.api.auth import TokenCache
from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.localpg import LocalCluster, free_port
from ai_service.notifications import TOKENS_CHANNEL
from ai_service.store.jobs import JobRepository
from ai_service.store.tokens import TokenRepository
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with

STATS = "/api/v1/stats"
DEADLINE = 30.0


def poll(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def cache(app: Flask) -> TokenCache:
    """The app's token cache, made to keep entries far longer than any test runs: whatever
    retires an entry here is the revocation listener, not the clock."""
    tokens: TokenCache = app.extensions["ai_service_tokens"]
    tokens.ttl = 3600
    return tokens


def token_name(repo: JobRepository, token: str) -> str:
    [row] = [t for t in TokenRepository(repo).list_tokens() if t.prefix == token[:8]]
    return row.name


def revoke_silently(repo: JobRepository, token: str) -> None:
    """Revoke the token in the database with no notification: as if one were lost."""
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE name = :name"),
                     {"name": token_name(repo, token)})


def cached_client(app: Flask, cache: TokenCache, repo: JobRepository) -> tuple[FlaskClient, str]:
    """A client whose token this process has looked up while its listener delivers."""
    token = issue_token(repo, "admin")
    client = client_with(app, token)
    assert client.get(STATS).status_code == 200  # starts the listener
    poll(lambda: cache.trusted_generation() is not None, "the listener to deliver")
    assert client.get(STATS).status_code == 200  # looked up under a trusted generation
    return client, token


def listener_backends(repo: JobRepository) -> list[int]:
    with repo.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'ai-service-web-revocations'")).scalars())


def test_while_listening_a_token_is_served_from_memory(
    app: Flask, cache: TokenCache, repo: JobRepository
) -> None:
    client, token = cached_client(app, cache, repo)
    revoke_silently(repo, token)
    assert client.get(STATS).status_code == 200


def test_a_revoked_token_is_refused_at_once_by_a_process_that_had_it_cached(
    app: Flask, cache: TokenCache, repo: JobRepository
) -> None:
    client, token = cached_client(app, cache, repo)

    assert TokenRepository(repo).revoke_token(token_name(repo, token)) == 1

    # Only the notification's delivery is waited for: the entry would live another hour.
    poll(lambda: client.get(STATS).status_code == 401, "the revocation to be heard")
    assert [client.get(STATS).status_code for _ in range(5)] == [401] * 5


def test_revoking_notifies_and_revoking_nothing_does_not(database_url: str,
                                                        repo: JobRepository) -> None:
    token = issue_token(repo, "admin")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {TOKENS_CHANNEL}")
        assert TokenRepository(repo).revoke_token("nobody") == 0
        # Notifications arrive in commit order: anything "nobody" sent would come first.
        with repo.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, 'marker')"), {"channel": TOKENS_CHANNEL})
        first = next(listener.notifies(timeout=DEADLINE, stop_after=1))
        assert first.payload == "marker"

        assert TokenRepository(repo).revoke_token(token_name(repo, token)) == 1
        heard = next(listener.notifies(timeout=DEADLINE, stop_after=1))
        assert (heard.channel, heard.payload) == (TOKENS_CHANNEL, "")


@pytest.fixture
def unreachable_listener_cache(repo: JobRepository) -> Iterator[TokenCache]:
    """A cache whose listener can never connect (nothing listens on its port)."""
    tokens = TokenCache(TokenRepository(repo), f"postgresql://127.0.0.1:{free_port()}/nowhere",
                        ttl=3600)
    yield tokens
    tokens.close()


def test_while_the_listener_is_not_connected_every_lookup_asks_the_database(
    unreachable_listener_cache: TokenCache, repo: JobRepository
) -> None:
    cache = unreachable_listener_cache
    token = issue_token(repo, "admin")
    assert cache.principal_for(token) is not None
    assert cache.trusted_generation() is None

    revoke_silently(repo, token)

    assert cache.principal_for(token) is None


def test_the_listener_reconnects_after_its_connection_is_killed_and_trusts_nothing_older(
    app: Flask, cache: TokenCache, repo: JobRepository
) -> None:
    client, token = cached_client(app, cache, repo)
    before = cache.trusted_generation()
    [backend] = listener_backends(repo)

    with repo.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    revoke_silently(repo, token)  # revoked while nobody listens: no notification reaches us

    poll(lambda: cache.trusted_generation() not in (None, before), "the listener to reconnect")
    assert listener_backends(repo) not in ([], [backend])
    assert client.get(STATS).status_code == 401

    # Listening again: a later revocation is heard as before.
    other, other_token = cached_client(app, cache, repo)
    TokenRepository(repo).revoke_token(token_name(repo, other_token))
    poll(lambda: other.get(STATS).status_code == 401, "the revocation to be heard")


def test_the_listener_survives_a_postgresql_restart_and_hears_revocations_after_it(
    own_cluster: LocalCluster, own_cluster_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    url = own_cluster_url
    app = make_app(make_settings(url))
    repo = make_repository(make_settings(url), "test-revocations")
    try:
        cache = app.extensions["ai_service_tokens"]
        cache.ttl = 3600
        client, token = cached_client(app, cache, repo)

        own_cluster.stop(mode="immediate")
        poll(lambda: cache.trusted_generation() is None, "the listener to notice the outage")
        own_cluster.start()
        poll(lambda: cache.trusted_generation() is not None, "the listener to come back")

        assert client.get(STATS).status_code == 200
        TokenRepository(repo).revoke_token(token_name(repo, token))
        poll(lambda: client.get(STATS).status_code == 401, "the revocation to be heard")
    finally:
        repo.engine.dispose()
