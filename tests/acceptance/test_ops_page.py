"""The operations page in a real headless Chromium: sign in, see the numbers the API reports,
retry a failed job, see it go back to pending."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import text as sql_text

from ai_service.api.ops_page import COOKIE
from ai_service.composition import make_repository
from ai_service.store.tokens import TokenRepository
from tests.acceptance.helpers import Api, create
from tests.conftest import make_settings

pytestmark = pytest.mark.acceptance

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Where the page's picture is left for a person to look at (docs/ops-page.png is one).
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", "/tmp"))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def failed_job(api: Api, category: str = "auth", message: str = "HTTP 401: Invalid API key",
               **fields: str) -> str:
    job_id = create(api, "doomed", max_attempts=1, **fields)
    [job] = api.post("/jobs/claim", {"worker_id": "by-hand"}).json()["jobs"]
    assert job["id"] == job_id
    body = {"worker_id": "by-hand", "lease_token": job["lease_token"], "category": category,
            "message": message}
    assert api.post(f"/jobs/{job_id}/fail", body).json()["status"] == "failed"
    return job_id


def text(driver: webdriver.Chrome, css: str) -> str:
    """The element's text, once the page that has it has loaded (a form post navigates)."""
    found = WebDriverWait(driver, 60).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )
    return found.text.strip()


def test_the_page_shows_the_api_numbers_and_retries_a_failed_job(
    api: Api, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    job_id = failed_job(api)
    for n in range(3):
        create(api, f"waiting {n}")

    browser.get(api.url + "/")
    browser.find_element(By.ID, "token").send_keys(api.headers["Authorization"].split()[1])
    browser.find_element(By.ID, "sign-in").click()

    stats = api.get("/stats").json()["by_status"]
    assert text(browser, "#total-pending") == str(stats["pending"]) == "3"
    assert text(browser, "#total-failed") == str(stats["failed"]) == "1"
    row = f"#failure-{job_id}"
    assert text(browser, f"{row} .status") == "failed"
    assert "Invalid API key" in text(browser, row)
    browser.save_screenshot(str(SCREENSHOTS / "ops-page.png"))

    browser.find_element(By.CSS_SELECTOR, f"{row} button.retry").click()

    assert "now pending" in text(browser, "#message")
    assert api.get(f"/jobs/{job_id}").json()["status"] == "pending"
    assert text(browser, "#total-pending") == "4"
    assert text(browser, "#total-failed") == "0"


def test_the_page_asks_for_an_admin_token(api: Api, browser: webdriver.Chrome) -> None:
    browser.get(api.url + "/")
    browser.find_element(By.ID, "token").send_keys("ais_not-a-token")
    browser.find_element(By.ID, "sign-in").click()
    assert "admin token is needed" in text(browser, "#login-error")


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(url + "/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "sign-in").click()
    text(driver, "#total-pending")


def opens_the_page(url: str, session_id: str) -> bool:
    """Whether this cookie, copied out of the browser, opens the page for someone else."""
    body = requests.get(url + "/", cookies={COOKIE: session_id}, timeout=10).text
    assert 'id="total-pending"' in body or 'id="sign-in"' in body, body
    return 'id="total-pending"' in body


def test_signing_out_ends_the_session_even_for_a_copied_cookie(
    api: Api, browser: webdriver.Chrome
) -> None:
    token = api.headers["Authorization"].split()[1]
    sign_in(browser, api.url, token)
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token not in cookie["value"]
    assert opens_the_page(api.url, cookie["value"])
    copied_as_bearer = requests.get(f"{api.url}/api/v1/stats", timeout=10,
                                    headers={"Authorization": f"Bearer {cookie['value']}"})
    assert copied_as_bearer.status_code == 401

    browser.find_element(By.ID, "sign-out").click()

    assert "sign in again" in text(browser, "#login-error")
    assert browser.get_cookie(COOKIE) is None
    assert not opens_the_page(api.url, cookie["value"])


def test_revoking_the_token_ends_its_page_session(
    api: Api, browser: webdriver.Chrome, database_url: str
) -> None:
    repository = make_repository(make_settings(database_url), "test-page-revoke")
    try:
        token = TokenRepository(repository).issue_token("page-operator", "admin")
        sign_in(browser, api.url, token)

        assert TokenRepository(repository).revoke_token("page-operator") == 1
    finally:
        repository.engine.dispose()

    browser.refresh()
    assert text(browser, "#sign-in") == "Sign in"
    assert not opens_the_page(api.url, browser.get_cookie(COOKIE)["value"])


def until_shown(driver: webdriver.Chrome, action: Callable[[webdriver.Chrome], object],
                css: str) -> None:
    """Do `action` until the page it leads to has `css`. The overview reloads itself: a reload
    between finding an element and using it leaves the element stale or gone, and then the
    action is done again on the reloaded page."""
    def done(d: webdriver.Chrome) -> bool:
        if not d.find_elements(By.CSS_SELECTOR, css):
            action(d)
        return bool(d.find_elements(By.CSS_SELECTOR, css))

    WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,)).until(done)


def texts(driver: webdriver.Chrome, css: str) -> list[str]:
    return [found.text.strip() for found in driver.find_elements(By.CSS_SELECTOR, css)]


def test_a_job_id_opens_the_job_with_its_events_and_its_page_retries_it(
    api: Api, browser: webdriver.Chrome
) -> None:
    job_id = failed_job(api, owner_ref="beeline/501")
    sign_in(browser, api.url, api.headers["Authorization"].split()[1])

    until_shown(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f"#failure-{job_id} a.job-link").click(), "#job-id")

    assert text(browser, "#job-id") == job_id
    assert text(browser, "#job-status") == "failed"
    assert text(browser, "#job-owner-ref") == "beeline/501"
    assert "Invalid API key" in text(browser, "#job-error")
    assert texts(browser, "#events .event-name") == ["created", "claimed", "failed"]
    browser.save_screenshot(str(SCREENSHOTS / "ops-job.png"))

    browser.find_element(By.ID, "job-retry").click()

    assert "now pending" in text(browser, "#message")
    assert text(browser, "#job-id") == job_id  # back on the job's page
    assert text(browser, "#job-status") == "pending"
    assert texts(browser, "#events .event-name")[-1] == "retried"
    assert api.get(f"/jobs/{job_id}").json()["status"] == "pending"


def test_the_search_finds_jobs_by_owner_ref_and_the_failures_filter_by_category(
    api: Api, browser: webdriver.Chrome
) -> None:
    refused = failed_job(api, "auth", owner_ref="order/7")
    slow = failed_job(api, "timeout", "no answer in 120 s", owner_ref="order/8")
    in_telephony = create(api, "first", owner_ref="order/42")
    in_billing = create(api, "second", owner_ref="order/42", owner_service="billing")
    sign_in(browser, api.url, api.headers["Authorization"].split()[1])

    def filter_timeouts(d: webdriver.Chrome) -> None:
        Select(d.find_element(By.ID, "filter-category")).select_by_value("timeout")
        d.find_element(By.ID, "filter-go").click()

    until_shown(browser, filter_timeouts, "#filter-clear")
    rows = browser.find_elements(By.CSS_SELECTOR, "#failures tr[id^=failure-]")
    assert [row.get_attribute("id") for row in rows] == [f"failure-{slow}"]
    assert not browser.find_elements(By.ID, f"failure-{refused}")

    until_shown(browser, lambda d: d.find_element(By.ID, "search").send_keys(
        "order/42" + Keys.ENTER), "#matches")
    listed = browser.find_elements(By.CSS_SELECTOR, "#matches tr[id^=match-]")
    assert [row.get_attribute("id") for row in listed] == [f"match-{in_billing}",
                                                          f"match-{in_telephony}"]

    browser.find_element(By.CSS_SELECTOR, f"#match-{in_billing} a.job-link").click()
    assert text(browser, "#job-id") == in_billing
    assert text(browser, "#job-owner-service") == "billing"

    # One job under the owner_ref: the search opens it.
    search = browser.find_element(By.ID, "search")
    search.clear()
    search.send_keys("order/7" + Keys.ENTER)
    WebDriverWait(browser, 60).until(lambda d: text(d, "#job-id") == refused)


def test_the_page_shows_the_top_owners_and_a_spent_budget(
    api: Api, browser: webdriver.Chrome
) -> None:
    """A chat job completed over the API counts its tokens for its owner; with a budget the
    owner has used up, the page says budget_exhausted."""
    job_id = create(api, "count me", owner_service="crm")
    [job] = api.post("/jobs/claim", {"worker_id": "by-hand"}).json()["jobs"]
    result = {"content": "ok", "duration_ms": 500.0,
              "usage": {"prompt_tokens": 1200, "completion_tokens": 34}}
    done = api.post(f"/jobs/{job_id}/complete", {
        "worker_id": "by-hand", "lease_token": job["lease_token"], "result": result})
    assert done.status_code == 200, done.text
    budget = requests.put(f"{api.url}/api/v1/owners/crm", json={"daily_tokens": 1000},
                          headers=api.headers, timeout=30)
    assert budget.status_code == 200, budget.text

    sign_in(browser, api.url, api.headers["Authorization"].split()[1])
    assert texts(browser, "#usage tr.usage-owner") == ["crm 1 1234 0 0.5"]
    assert texts(browser, "#budgets tr.budget") == ["crm 1234 1000 budget_exhausted: its jobs wait"]


def test_the_page_shows_a_failing_webhook_registration_and_replays_its_failed_deliveries(
    api: Api, browser: webdriver.Chrome, database_url: str
) -> None:
    hook = api.post("/webhooks", {"owner_service": "telephony",
                                  "url": "https://hooks.example.com/ai",
                                  "events": ["job.cancelled"]}).json()
    job_id = create(api, "cancelled")
    assert api.post(f"/jobs/{job_id}/cancel", {}).json()["status"] == "cancelled"
    # As the dispatcher leaves a delivery whose last attempt failed (no receiver runs here).
    repository = make_repository(make_settings(database_url), "test-page-webhooks")
    try:
        with repository.engine.begin() as conn:
            conn.execute(sql_text(
                "UPDATE webhook_deliveries SET state = 'failed', finished_at = now(), "
                "last_status_code = 500, last_error = '500 Internal Server Error'"))
            conn.execute(sql_text("UPDATE webhook_endpoints SET failing_since = now()"))
    finally:
        repository.engine.dispose()
    sign_in(browser, api.url, api.headers["Authorization"].split()[1])

    row = f"#webhook-{hook['id']}"
    assert "failing" in text(browser, f"{row} .webhook-state")
    until_shown(browser, lambda d: d.find_element(
        By.CSS_SELECTOR, f"{row} button.replay-all").click(), "#message")

    assert "1 failed deliveries" in text(browser, "#message")
    listed = api.get(f"/webhooks/{hook['id']}/deliveries").json()["deliveries"]
    assert [d["state"] for d in listed] == ["pending"]
