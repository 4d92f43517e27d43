"""The operator console in a real headless Chromium, against the real app on uvicorn, the test
database and (for requeue) the running worker and scheduler: sign-in, counts equal to the
API's, requeue, pause and resume from the buttons, CSRF refusal, a workspace key refused,
live updates without a reload, a phone's width, the keyboard and contrast. Screenshots go to
each test's temporary folder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import (
    as_desktop,
    as_phone,
    audit_actors,
    chromium,
    console_settings,
    full_page_png,
    horizontal_overflow,
    low_contrast_text,
    running_job,
)
from sqlalchemy import text
from test_api_support import Tenant, held_job, live_server, make_tenant

from scheduler.http.app import create_app
from scheduler.jobs import keys, operations
from shared.db import Database
from shared.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

WAIT_S = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def console_url(settings: Settings) -> Iterator[str]:
    with live_server(create_app(console_settings(settings))) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def admin_key(db: Database) -> keys.NewKey:
    return keys.create_admin_key(db, "os:pytest")


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "cbr", calls=8)


@pytest.fixture(scope="module")
def other_tenant(db: Database) -> Tenant:
    return make_tenant(db, "cbo", calls=2)


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "profile") as driver:
        yield driver


# --------------------------------------------------------------------------- helpers


def wait_until(driver: Any, condition: Any, message: str, timeout_s: float = WAIT_S) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # htmx replaces the live fragment every few seconds: an element read just before a swap
    # is stale, and the next poll reads the new one.
    waiting = WebDriverWait(driver, timeout_s, poll_frequency=0.2, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException))
    return waiting.until(condition, message)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def sign_in(driver: Any, base_url: str, key: str) -> None:
    driver.get(f"{base_url}/console/sign-in")
    css(driver, "#admin-key").send_keys(key)
    css(driver, "[data-sign-in]").click()


def signed_in(driver: Any, base_url: str, key: str) -> None:
    sign_in(driver, base_url, key)
    wait_until(driver, lambda d: d.current_url.endswith("/console/jobs"),
               "sign-in did not land on the jobs page")


def page_counts(driver: Any) -> dict[str, int]:
    return {element.get_attribute("data-count"): int(element.text)
            for element in all_css(driver, "#job-live [data-count]")}


def api_job(base_url: str, tenant: Tenant, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/v1/backfills/{job_id}", headers=tenant.headers,
                         timeout=10)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = full_page_png(driver, tmp_path / f"{name}.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    return path


def job_state_on_page(driver: Any) -> str:
    return str(css(driver, "#job-live").get_attribute("data-state"))


# --------------------------------------------------------------------------- sign-in


def test_an_admin_signs_in_and_sees_every_workspace(
        browser: Any, console_url: str, admin_key: keys.NewKey, db: Database, tenant: Tenant,
        other_tenant: Tenant, tmp_path: Path) -> None:
    mine = held_job(db, tenant, state="completed", failed=(tenant.call_ids[0],))
    theirs = held_job(db, other_tenant, state="paused", pending=(other_tenant.call_ids[0],))
    browser.get(f"{console_url}/console/jobs")
    assert "/console/sign-in" in browser.current_url  # no session yet: sent to sign in
    signed_in(browser, console_url, admin_key.key)
    rows = {row.get_attribute("data-job-id") for row in all_css(browser, "[data-job-id]")}
    assert {mine, theirs} <= rows
    shot(browser, tmp_path, "jobs")

    browser.get(f"{console_url}/console/jobs?workspace={other_tenant.workspace_id}")
    rows = {row.get_attribute("data-job-id") for row in all_css(browser, "[data-job-id]")}
    assert rows == {theirs}
    assert mine not in browser.page_source and tenant.workspace_id not in browser.page_source


def test_a_workspace_key_is_refused(browser: Any, console_url: str, tenant: Tenant,
                                    tmp_path: Path) -> None:
    sign_in(browser, console_url, tenant.key)
    message = wait_until(browser, lambda d: css(d, "[data-sign-in-error]"),
                         "no sign-in error shown")
    assert "workspace key" in message.text and "--admin" in message.text
    assert "/console/sign-in" in browser.current_url
    assert browser.get_cookie("backfill_console") is None
    shot(browser, tmp_path, "workspace-key-refused")
    browser.get(f"{console_url}/console/jobs")
    assert "/console/sign-in" in browser.current_url


# --------------------------------------------------------------------------- the job page


def test_the_job_page_counts_equal_the_api(browser: Any, console_url: str,
                                           admin_key: keys.NewKey, db: Database,
                                           tenant: Tenant, tmp_path: Path) -> None:
    job_id = held_job(db, tenant, state="paused", failed=tenant.call_ids[:2],
                      pending=tenant.call_ids[2:5])
    signed_in(browser, console_url, admin_key.key)
    browser.get(f"{console_url}/console/jobs/{job_id}")
    counts = page_counts(browser)
    assert counts == api_job(console_url, tenant, job_id)["counts"]
    assert counts["failed"] == 2 and counts["pending"] == 3
    failed_rows = {row.get_attribute("data-failed-session")
                   for row in all_css(browser, "[data-failed-session]")}
    assert failed_rows == set(tenant.call_ids[:2])
    shot(browser, tmp_path, "job")


def test_requeue_from_the_button_runs_the_failures_again_live(
        browser: Any, console_url: str, admin_key: keys.NewKey, db: Database, tenant: Tenant,
        pipeline: Any, tmp_path: Path) -> None:
    failed = tuple(tenant.call_ids[5:8])
    job_id = held_job(db, tenant, state="completed", failed=failed)
    signed_in(browser, console_url, admin_key.key)
    browser.get(f"{console_url}/console/jobs/{job_id}")
    css(browser, "#action-reason").send_keys("provider outage over")
    css(browser, '[data-action="requeue"]').click()
    notice = wait_until(browser, lambda d: css(d, "#notice"), "no notice after requeue")
    assert "Requeued 3" in notice.text
    # From here the page must follow the job by itself (htmx polls): no reload.
    browser.execute_script("window.__not_reloaded = true")
    wait_until(browser, lambda d: page_counts(d)["succeeded"] == 3,
               "the page did not show the requeued sessions succeed", timeout_s=90)
    wait_until(browser, lambda d: job_state_on_page(d) == "completed",
               "the page did not show the job completed")
    assert browser.execute_script("return window.__not_reloaded === true")
    assert page_counts(browser) == api_job(console_url, tenant, job_id)["counts"]
    assert audit_actors(db, job_id, "requeue") == [f"api_key:{admin_key.key_id}"]
    reasons = [event["reason"] for event in api_job(console_url, tenant, job_id)["audit"]
               if event["action"] == "requeue"]
    assert reasons == ["provider outage over"]
    shot(browser, tmp_path, "job-after-requeue")


def test_pause_and_resume_from_the_buttons_with_the_keyboard(
        browser: Any, console_url: str, admin_key: keys.NewKey, db: Database,
        tenant: Tenant, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    job_id = running_job(db, tenant, running=(tenant.call_ids[0],),
                         pending=(tenant.call_ids[1],))
    signed_in(browser, console_url, admin_key.key)
    browser.get(f"{console_url}/console/jobs/{job_id}")
    css(browser, '[data-action="pause"]').click()
    wait_until(browser, lambda d: job_state_on_page(d) == "paused", "not paused on the page")
    assert api_job(console_url, tenant, job_id)["state"] == "paused"

    # Resume without a mouse: Tab to the button, Enter.
    for _ in range(60):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("data-action") == "resume":
            break
    focused = browser.switch_to.active_element
    assert focused.get_attribute("data-action") == "resume", "Tab never reached Resume"
    outline = browser.execute_script(
        "return getComputedStyle(arguments[0]).outlineStyle", focused)
    assert outline != "none", "the focused button shows no focus ring"
    focused.send_keys(Keys.ENTER)
    wait_until(browser, lambda d: job_state_on_page(d) == "running", "not resumed on the page")
    job = api_job(console_url, tenant, job_id)
    assert job["state"] == "running"
    actors = {event["action"]: event["actor"] for event in job["audit"]}
    assert actors["pause"] == actors["resume"] == f"api_key:{admin_key.key_id}"
    shot(browser, tmp_path, "job-resumed")


def test_a_stale_csrf_token_is_refused_with_a_way_back(
        browser: Any, console_url: str, admin_key: keys.NewKey, db: Database,
        tenant: Tenant, tmp_path: Path) -> None:
    job_id = running_job(db, tenant, running=(tenant.call_ids[2],))
    signed_in(browser, console_url, admin_key.key)
    browser.get(f"{console_url}/console/jobs/{job_id}")
    browser.execute_script(
        "document.querySelector('#job-live input[name=csrf_token]').value = 'stale-token'")
    css(browser, '[data-action="pause"]').click()
    page = wait_until(browser, lambda d: css(d, "[data-error-page]"), "no error page")
    assert page.get_attribute("data-error-page") == "403"
    assert "nothing was changed" in page.text
    shot(browser, tmp_path, "csrf-refused")
    assert api_job(console_url, tenant, job_id)["state"] == "running"
    assert audit_actors(db, job_id, "pause") == []
    css(browser, "[data-back]").click()
    wait_until(browser, lambda d: d.current_url.endswith(f"/console/jobs/{job_id}"),
               "the way back does not lead to the job")
    assert job_state_on_page(browser) == "running"


def test_an_unknown_job_is_a_404_page(browser: Any, console_url: str,
                                      admin_key: keys.NewKey) -> None:
    signed_in(browser, console_url, admin_key.key)
    browser.get(f"{console_url}/console/jobs/bf_no_such_job")
    assert css(browser, "[data-error-page]").get_attribute("data-error-page") == "404"
    assert "bf_no_such_job" in css(browser, "main").text


# --------------------------------------------------------------------------- phone, contrast


def test_pages_fit_a_phone_and_keep_contrast(browser: Any, console_url: str,
                                             admin_key: keys.NewKey, db: Database,
                                             settings: Settings, tenant: Tenant,
                                             pipeline: Any, tmp_path: Path) -> None:
    job_id = held_job(db, tenant, state="paused", failed=(tenant.call_ids[3],),
                      pending=(tenant.call_ids[4],))
    analysed = _an_analysed_session(db, settings, tenant)
    signed_in(browser, console_url, admin_key.key)
    pages = {"jobs": "/console/jobs", "job": f"/console/jobs/{job_id}",
             "session": f"/console/sessions/{analysed}",
             "not-found": "/console/jobs/bf_missing"}
    for name, path in pages.items():
        for layout in ("desktop", "phone"):
            as_phone(browser) if layout == "phone" else as_desktop(browser)
            browser.get(console_url + path)
            assert horizontal_overflow(browser) <= 0, f"{name} scrolls sideways ({layout})"
            checked, low = low_contrast_text(browser)
            assert checked >= 4 and low == [], (name, layout, low)
            shot(browser, tmp_path, f"{name}-{layout}")
    as_desktop(browser)


def _an_analysed_session(db: Database, settings: Settings, tenant: Tenant) -> str:
    """A session of the tenant with a run in its history (a one-session rerun, waited for)."""
    session_id = tenant.call_ids[4]
    job_id = operations.rerun_session(db, settings, session_id, actor="os:pytest")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            state = tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                               {"id": job_id}).scalar_one()
        if state == "completed":
            return session_id
        time.sleep(0.2)
    raise AssertionError(f"rerun {job_id} did not complete")
