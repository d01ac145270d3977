"""The operations page's job view: a job's fields, input, result and event trail behind a
session, every value escaped, long ones cut short with a link to the whole, credentials never
shown; the search box finds a job by id or owner_ref; the failures list narrows by category
and owner service, and a value it cannot use is named, never a 500."""

from __future__ import annotations

import html
import json
import re
import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from ai_service.api.job_display import PREVIEW_CHARS
from ai_service.driver import class_rows
from ai_service.rows import JobEventRow, JobRow
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, lease_of, new_job
from tests.integration.test_ops_sessions import csrf_of, signed_in

HOSTILE = '<script>alert("owned")</script>'


@pytest.fixture
def browser(app: Flask, admin_token: str) -> FlaskClient:
    return signed_in(app, admin_token)


def page_of(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    body = response.get_data(as_text=True)
    assert response.status_code == status, body
    return body


def one_job(repo: JobRepository, **fields: object) -> JobRow:
    [(job, _)] = repo.create_jobs([new_job(**fields)])
    return job


def failed_for_good(repo: JobRepository, category: str = "auth",
                    message: str = "HTTP 401: Invalid API key", **fields: object) -> JobRow:
    job = one_job(repo, max_attempts=1, **fields)
    claimed = claim_one(repo, "w-doom")
    assert claimed.id == job.id
    return repo.fail_job(lease_of(claimed), category, message)


def event_names(body: str) -> list[str]:
    return re.findall(r'<td class="event-name">([a-z_]+)</td>', body)


def test_a_job_page_shows_its_fields_result_and_event_trail(
    browser: FlaskClient, repo: JobRepository
) -> None:
    job = one_job(repo, owner_ref="beeline/77", input={"user": "what is the weather"})
    first = claim_one(repo, "w-first")
    repo.fail_job(lease_of(first), "timeout", "no answer in 120 s", retryable=True,
                  retry_after=0)
    second = claim_one(repo, "w-second")
    assert second.id == job.id
    repo.complete_job(lease_of(second), {"text": "sunny"})

    body = page_of(browser, f"/ops/jobs/{job.id}")

    assert re.search(r'id="job-status"[^>]*>completed<', body)
    assert re.search(r'id="job-attempts">2/3', body)
    assert "w-second" in body and "beeline/77" in body and "telephony" in body
    assert "what is the weather" in body and "sunny" in body
    assert re.search(r'id="job-duration">\d+\.\d{3} s<', body)
    assert event_names(body) == ["created", "claimed", "attempt_failed", "claimed",
                                 "completed"]
    assert "no answer in 120 s" in body
    # A worker's fencing token: whoever holds it can complete the job in the worker's place.
    assert str(second.lease_token) not in body and str(first.lease_token) not in body
    # A completed job is done with: neither retried nor cancelled.
    assert 'id="job-retry"' not in body and 'id="job-cancel"' not in body


def test_hostile_owner_ref_and_input_are_escaped_on_every_page(
    browser: FlaskClient, repo: JobRepository
) -> None:
    job = failed_for_good(repo, owner_ref=HOSTILE, input={"user": HOSTILE},
                          message=f"provider said {HOSTILE}")
    failed_for_good(repo, owner_ref=HOSTILE)  # two under one owner_ref: the search lists them

    pages = {
        "job": page_of(browser, f"/ops/jobs/{job.id}"),
        "overview": page_of(browser, "/"),
        "search": page_of(browser, f"/ops/search?q={HOSTILE}"),
        "missing": page_of(browser, "/ops/jobs/<script>alert(1)", 404),
        "filter": page_of(browser, f"/?category={HOSTILE}&owner_service={HOSTILE}"),
    }

    for name, body in pages.items():
        assert "<script" not in body, name
        assert "&lt;script&gt;" in body, name
    assert str(job.id) in pages["search"]


def test_a_long_input_is_cut_short_with_a_link_to_the_whole(
    browser: FlaskClient, repo: JobRepository
) -> None:
    document = "".join(f"line {n}: {'x' * 60}\n" for n in range(200))
    job = one_job(repo, input={"user": document})

    body = page_of(browser, f"/ops/jobs/{job.id}")
    [shown] = re.findall(r'<pre class="value" id="job-input">(.*?)</pre>', body, re.DOTALL)
    assert len(html.unescape(shown)) <= PREVIEW_CHARS + 1  # and the ellipsis
    assert "line 0:" in shown and "line 199:" not in shown
    assert f'href="/ops/jobs/{job.id}/input"' in body

    whole = browser.get(f"/ops/jobs/{job.id}/input")
    assert whole.status_code == 200
    assert whole.mimetype == "text/plain"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in whole.headers["Content-Security-Policy"]
    assert json.loads(whole.get_data(as_text=True)) == {"user": document}


def test_credentials_in_an_inputs_url_are_never_shown(
    browser: FlaskClient, repo: JobRepository
) -> None:
    job = one_job(repo, task_type="transcribe", input={
        "audio_url": "https://recorder:s3cr3t-pass@records.example/call.wav",
        "nested": [{"source": "ftp://u:hunter2@files.example/x"}],
    })

    body = page_of(browser, f"/ops/jobs/{job.id}")
    whole = page_of(browser, f"/ops/jobs/{job.id}/input")

    for shown in (body, whole):
        assert "s3cr3t-pass" not in shown and "hunter2" not in shown
        assert "***@records.example/call.wav" in shown and "***@files.example/x" in shown


def test_an_unknown_or_malformed_job_id_gets_the_pages_404(browser: FlaskClient) -> None:
    for ref in (str(uuid.uuid4()), "not-a-job-id"):
        for path in (f"/ops/jobs/{ref}", f"/ops/jobs/{ref}/input"):
            response = browser.get(path)
            assert response.status_code == 404, path
            assert response.mimetype == "text/html"
            assert 'id="job-missing"' in response.get_data(as_text=True)


def test_the_job_view_and_the_search_need_a_session(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    job = one_job(repo, owner_ref="private/1", input={"user": "a private prompt"})
    anonymous = app.test_client()
    as_api = app.test_client()
    as_api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"

    for client in (anonymous, as_api):
        for path in (f"/ops/jobs/{job.id}", f"/ops/jobs/{job.id}/input",
                     "/ops/search?q=private/1", f"/ops/search?q={job.id}"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["Location"] == "/?error=token"
            assert "private" not in response.get_data(as_text=True)


def test_retry_and_cancel_from_the_job_page_come_back_to_it(
    browser: FlaskClient, repo: JobRepository
) -> None:
    job = failed_for_good(repo)
    csrf = csrf_of(browser)

    retried = browser.post(f"/ops/jobs/{job.id}/retry", data={"csrf": csrf, "back": "job"})

    assert retried.status_code == 303
    assert retried.headers["Location"].startswith(f"/ops/jobs/{job.id}?done=")
    body = page_of(browser, retried.headers["Location"])
    assert re.search(r'id="message">job [0-9a-f-]+ is now pending<', body)
    assert event_names(body)[-1] == "retried"
    assert 'id="job-cancel"' in body and 'id="job-retry"' not in body

    cancelled = browser.post(f"/ops/jobs/{job.id}/cancel", data={"csrf": csrf, "back": "job"})
    assert cancelled.headers["Location"].startswith(f"/ops/jobs/{job.id}?done=")
    assert repo.get_job(job.id).status == "cancelled"

    # `back` names where the button was, never a place: anything else is the overview.
    elsewhere = browser.post(f"/ops/jobs/{job.id}/retry",
                             data={"csrf": csrf, "back": "https://evil.example/"})
    assert elsewhere.headers["Location"].startswith("/?done=")


def test_every_job_id_on_the_page_links_to_its_job(
    browser: FlaskClient, repo: JobRepository
) -> None:
    failed = failed_for_good(repo)
    retrying = one_job(repo, owner_ref="retrying")
    repo.fail_job(lease_of(claim_one(repo)), "timeout", "slow", retryable=True)

    body = page_of(browser, "/")

    shown_ids = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                               body.replace(csrf_of(browser), "")))
    assert shown_ids == {str(failed.id), str(retrying.id)}
    for job_id in shown_ids:
        assert f'<a class="job-link" href="/ops/jobs/{job_id}"><code>{job_id}</code></a>' in body


def test_searching_a_job_id_opens_that_job(browser: FlaskClient, repo: JobRepository) -> None:
    job = one_job(repo)
    response = browser.get(f"/ops/search?q=%20{job.id}%20")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/ops/jobs/{job.id}"


def test_searching_an_owner_ref_opens_its_one_job_or_lists_them_across_owner_services(
    browser: FlaskClient, repo: JobRepository
) -> None:
    only = one_job(repo, owner_ref="call/1")
    first = one_job(repo, owner_ref="call/2", owner_service="telephony")
    second = one_job(repo, owner_ref="call/2", owner_service="billing")
    one_job(repo, owner_ref="call/20")  # a longer ref is not a match

    opened = browser.get("/ops/search?q=call/1")
    assert opened.status_code == 303 and opened.headers["Location"] == f"/ops/jobs/{only.id}"

    listed = page_of(browser, "/ops/search?q=call/2")
    assert re.findall(r'<tr id="match-([0-9a-f-]+)">', listed) == [str(second.id),
                                                                    str(first.id)]
    assert "billing" in listed and "telephony" in listed


def test_an_owner_ref_that_reads_as_a_job_id_is_found_as_an_owner_ref(
    browser: FlaskClient, repo: JobRepository
) -> None:
    reference = str(uuid.uuid4())
    job = one_job(repo, owner_ref=reference)
    response = browser.get(f"/ops/search?q={reference}")
    assert response.headers["Location"] == f"/ops/jobs/{job.id}"


@pytest.mark.parametrize(("query", "status", "told"), [
    ("nobody/9", 200, "no job has the id or owner_ref &#39;nobody/9&#39;"),
    ("", 400, "type a job id or an owner_ref"),
    ("r" * 257, 400, "at most 256 characters"),
    ("bad%00ref", 400, "holds no NUL character"),
])
def test_a_search_that_cannot_find_anything_says_why(
    browser: FlaskClient, query: str, status: int, told: str
) -> None:
    body = page_of(browser, f"/ops/search?q={query}", status)
    [problem] = re.findall(r'id="search-problem">(.*?)</p>', body)
    assert told in problem


def failure_ids(body: str) -> set[str]:
    return set(re.findall(r'<tr id="failure-([0-9a-f-]+)">', body))


def test_the_failures_list_narrows_by_category_and_owner_service(
    browser: FlaskClient, repo: JobRepository
) -> None:
    auth_telephony = failed_for_good(repo, "auth", owner_service="telephony")
    auth_billing = failed_for_good(repo, "auth", owner_service="billing")
    timeout_billing = failed_for_good(repo, "timeout", owner_service="billing")
    everything = {str(j.id) for j in (auth_telephony, auth_billing, timeout_billing)}

    assert failure_ids(page_of(browser, "/")) == everything
    assert failure_ids(page_of(browser, "/?category=auth")) == {
        str(auth_telephony.id), str(auth_billing.id)}
    assert failure_ids(page_of(browser, "/?owner_service=billing")) == {
        str(auth_billing.id), str(timeout_billing.id)}
    narrowed = page_of(browser, "/?category=auth&owner_service=billing")
    assert failure_ids(narrowed) == {str(auth_billing.id)}
    assert '<option value="auth" selected>' in narrowed
    assert '<option value="billing" selected>' in narrowed
    assert failure_ids(page_of(browser, "/?category=rate_limited")) == set()
    # The selects offer every declared category, and the owner services that have failures.
    overview = page_of(browser, "/")
    assert '<option value="context_length_exceeded" >' in overview
    assert re.findall(r'<option value="([a-z]+)" >', overview.split(
        'id="filter-owner-service"')[1].split("</select>")[0]) == ["billing", "telephony"]


@pytest.mark.parametrize(("query", "note"), [
    ("category=no_such_thing", "&#39;no_such_thing&#39; is not an error category"),
    ("category=auth%00", "is not an error category"),
    (f"owner_service={'s' * 65}", "that is not an owner service"),
    ("owner_service=tele%00phony", "that is not an owner service"),
])
def test_a_filter_value_no_failure_can_have_is_named_and_ignored(
    browser: FlaskClient, repo: JobRepository, query: str, note: str
) -> None:
    job = failed_for_good(repo)
    body = page_of(browser, f"/?{query}")
    assert note in body
    assert failure_ids(body) == {str(job.id)}  # shown unfiltered


def test_the_owner_ref_search_reads_pages_by_owner_services_not_by_history(
    repo: JobRepository,
) -> None:
    """Counted in buffers, not timed: the search walks the owner services (seven here) and
    looks each up, so ten times the history adds only what a deeper index costs each probe;
    reading ix_jobs_owner_ref whole (613 pages at 30,000 jobs), or the table, grows with it."""
    def pages_read(rows: int) -> int:
        with repo.engine.begin() as conn:
            conn.execute(text("""
                INSERT INTO jobs (owner_service, owner_ref, task_type, model_profile, input,
                                  status, attempts, created_at, finished_at)
                SELECT 'service-' || (g % 7), 'ref/' || g, 'llm_chat', 'qwen2.5-14b', '{}',
                       'completed', 1, now() - interval '2 days', now() - interval '2 days'
                FROM generate_series(1, :rows) AS g"""), {"rows": rows})
            conn.execute(text("ANALYZE jobs"))
            [[plan]] = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                                         f"{queries['jobs_by_owner_ref']}"),
                                    {"owner_ref": "ref/1234", "limit": 50}).all()
            conn.execute(text("DELETE FROM jobs"))
        top = plan[0]["Plan"]
        assert top["Actual Rows"] == 1
        return top["Shared Hit Blocks"] + top["Shared Read Blocks"]

    short, long = pages_read(3_000), pages_read(30_000)
    assert long < 2 * short and long <= 120, (short, long)


def test_a_job_and_its_events_are_read_from_one_snapshot(repo: JobRepository) -> None:
    """The job view's reads: a change committed between them shows in neither."""
    job = one_job(repo)
    with repo.driver.snapshot() as conn:
        [seen] = repo.driver.rows(conn, queries["get_job"], {"id": job.id, "scope": None},
                                  class_rows(JobRow))
        repo.cancel_job(job.id)  # another connection, committed in between
        events = repo.driver.rows(conn, queries["list_events"], {"job_id": job.id},
                                  class_rows(JobEventRow))
    assert seen.status == "pending"
    assert [e.event for e in events] == ["created"]
    view = repo.job_view(job.id)
    assert view is not None and view.job.status == "cancelled"
    assert [e.event for e in view.events] == ["created", "cancelled"]
