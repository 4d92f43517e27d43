"""Helpers for the console's tests: a console app with a deployment secret, admin keys, jobs
held in a chosen state, and a real headless Chromium driven by Selenium (holds no tests).

Chromium and its driver are Debian's (`chromium`, `chromium-driver`; `.ci/run` installs them
as root). Selenium is pointed at both and told to stay offline, so it never downloads a
driver or a browser; when Chromium cannot start, the browser tests fail and say why.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import text
from test_api_support import Tenant

from shared.db import Database
from shared.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
)
PHONE_WIDTH = 390
PHONE_HEIGHT = 844
DESKTOP = (1280, 900)
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_settings(settings: Settings) -> Settings:
    """The test run's settings with a deployment secret of their own."""
    return settings.model_copy(update={"secret_key": SecretStr(Fernet.generate_key().decode())})


def csrf_token(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def running_job(db: Database, tenant: Tenant, *, running: tuple[str, ...],
                pending: tuple[str, ...] = ()) -> str:
    """A running job whose items a worker holds under a long lease: the scheduler leaves it
    running (nothing to dispatch, nothing expired, not finished) until someone acts."""
    job_id = "bf_run_" + secrets.token_hex(6)
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO backfill_jobs (id, workspace_id, kind, filters, state, matched)
            VALUES (:id, :ws, 'call', '[]', 'running', :matched)
        """), {"id": job_id, "ws": tenant.workspace_id, "matched": len(running) + len(pending)})
        for session_id in running:
            tx.execute(text("""
                INSERT INTO backfill_items (job_id, session_id, state, attempts, started_at,
                                            lease_expires_at)
                VALUES (:job, :sid, 'running', 1, now(), now() + interval '1 hour')
            """), {"job": job_id, "sid": session_id})
        for session_id in pending:
            tx.execute(text("""
                INSERT INTO backfill_items (job_id, session_id, state, not_before)
                VALUES (:job, :sid, 'pending', now() + interval '1 hour')
            """), {"job": job_id, "sid": session_id})
    return job_id


def audit_actors(db: Database, job_id: str, action: str) -> list[str]:
    with db.transaction() as tx:
        return list(tx.execute(text(
            "SELECT actor FROM audit_events WHERE job_id = :j AND action = :a ORDER BY id"),
            {"j": job_id, "a": action}).scalars())


# --------------------------------------------------------------------------- the browser


@contextmanager
def chromium(profile_dir: Path) -> Iterator[Any]:
    """A headless Chromium under Selenium; fails the test (not skips) when it cannot start."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"Chromium cannot be started: {', '.join(missing)} missing (install the "
                    "Debian packages chromium and chromium-driver; .ci/run does as root)",
                    pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    previous = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch anything
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    except WebDriverException as exc:
        pytest.fail(f"Chromium cannot be started: {exc.msg}", pytrace=False)
    finally:
        if previous is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = previous
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def as_phone(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 2, "mobile": True})


def as_desktop(driver: Any) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def full_page_png(driver: Any, path: Path) -> Path:
    """The whole page (not only the viewport) as a PNG."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    })
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def horizontal_overflow(driver: Any) -> int:
    """How many CSS pixels the page is wider than the viewport (0 = no sideways scroll)."""
    return int(driver.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"))


# Every visible text node's colour against the first opaque background behind it, by the
# WCAG 2 formula (the same as scheduler.web.colour).
CONTRAST_SCRIPT = """
function rgba(value) {
  const m = value.match(/rgba?\\(([^)]+)\\)/);
  if (!m) return null;
  const p = m[1].split(/[ ,/]+/).filter(Boolean).map(parseFloat);
  return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
}
function luminance(c) {
  const f = v => {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
}
function background(el) {
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0.99) return c;
  }
  return {r: 255, g: 255, b: 255, a: 1};
}
const low = [];
let checked = 0;
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (!node.textContent.trim()) continue;
  const el = node.parentElement;
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  if (style.visibility === 'hidden' || box.width <= 1 || box.height <= 1) continue;
  if (el.closest('svg, datalist, select, option, .skip')) continue;
  const fg = rgba(style.color), bg = background(el);
  const a = luminance(fg), b = luminance(bg);
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  checked += 1;
  if (ratio < 4.5) low.push(node.textContent.trim().slice(0, 40) + ' ' + ratio.toFixed(2));
}
return {checked: checked, low: low};
"""


def low_contrast_text(driver: Any) -> tuple[int, list[str]]:
    """(text nodes checked, those below 4.5:1)."""
    result = driver.execute_script(CONTRAST_SCRIPT)
    return int(result["checked"]), list(result["low"])
