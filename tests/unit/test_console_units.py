"""The console's pure parts: sealed cookies, CSRF comparison, bucket widths, the chart's
geometry, and the job view's arithmetic (progress, rate, ETA, actions, cost against cap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from scheduler.http.console.charts import VIEW_HEIGHT, VIEW_WIDTH, throughput_chart
from scheduler.http.console.reads import MAX_BUCKETS, Activity, Bucket, Throughput, bucket_width
from scheduler.http.console.sessions import (
    ConsoleSession,
    Sealer,
    csrf_matches,
    new_session,
    sealer_from_settings,
)
from scheduler.http.console.views import (
    allowed_actions,
    analysis_rows,
    duration_text,
    job_view,
    percent_text,
)
from scheduler.webhooks.secretbox import MalformedSecretKey, SecretBox
from shared.settings import Settings

KEY = Fernet.generate_key()


def sealer() -> Sealer:
    return Sealer([KEY])


# --------------------------------------------------------------------------- cookies


def test_a_session_opens_only_with_its_own_purpose_and_key() -> None:
    session = new_session("key_1")
    sealed = sealer().seal_session(session)
    assert sealer().open_session(sealed) == session
    assert "key_1" not in sealed and session.csrf_token not in sealed
    assert sealer().open_sign_in(sealed) is None  # a session is no sign-in token
    assert sealer().open_session(sealer().seal_sign_in("t")) is None  # nor the other way
    assert Sealer([Fernet.generate_key()]).open_session(sealed) is None
    assert sealer().open_session(sealed[:-2] + "AA") is None
    assert sealer().open_session("") is None and sealer().open_session("é") is None


def test_cookies_and_webhook_secrets_never_open_each_other() -> None:
    """Same deployment key, derived cookie key: a stored webhook secret is not a cookie."""
    box = SecretBox([KEY])
    assert sealer().open_session(box.encrypt('{"p":"session","k":"key_1","c":"x"}')) is None


def test_csrf_comparison() -> None:
    assert csrf_matches("abc", "abc")
    assert not csrf_matches("abc", "abd") and not csrf_matches("abc", None)
    assert not csrf_matches("abc", "") and not csrf_matches("abc", "\udcff")


def test_the_sealer_from_settings() -> None:
    assert sealer_from_settings(Settings()) is None
    assert sealer_from_settings(Settings(BACKFILL_SECRET_KEY="  ")) is None
    with pytest.raises(MalformedSecretKey) as refused:
        sealer_from_settings(Settings(BACKFILL_SECRET_KEY="secret-but-not-fernet"))
    assert "secret-but-not-fernet" not in str(refused.value)
    made = sealer_from_settings(Settings(BACKFILL_SECRET_KEY=KEY.decode()))
    assert made is not None and "key" not in repr(made).replace("keys hidden", "")
    settings = Settings(BACKFILL_SECRET_KEY=KEY.decode())
    assert isinstance(settings.secret_key, SecretStr) and KEY.decode() not in repr(settings)
    assert made.open_session(sealer().seal_session(ConsoleSession("k", "c"))) == \
        ConsoleSession("k", "c")


# --------------------------------------------------------------------------- chart


@pytest.mark.parametrize(("span_s", "width"), [
    (0, 1), (59, 1), (60, 2), (119, 2), (299, 5), (3599, 60), (86400 * 3, 7200),
    (86400 * 100, 86400 * 100 // (86400 * MAX_BUCKETS) * 86400 + 86400)])
def test_bucket_widths_keep_the_chart_within_its_bars(span_s: int, width: int) -> None:
    assert bucket_width(span_s) == width
    assert span_s // width + 1 <= MAX_BUCKETS


def test_bars_stack_outcomes_to_scale() -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    buckets = [Bucket(start, {"succeeded": 8, "failed": 2}),
               Bucket(start + timedelta(seconds=10), {}),
               Bucket(start + timedelta(seconds=20), {"succeeded": 5})]
    chart = throughput_chart(Throughput(10, buckets))
    assert chart.peak == 10 and len(chart.bars) == 3
    first, quiet, last = chart.bars
    succeeded, failed = first.rects
    assert (succeeded.state, failed.state) == ("succeeded", "failed")
    assert succeeded.height == VIEW_HEIGHT * 0.8 and failed.height == VIEW_HEIGHT * 0.2
    assert failed.y + failed.height == succeeded.y  # stacked, no gap
    assert succeeded.y + succeeded.height == VIEW_HEIGHT  # on the baseline
    assert quiet.rects == () and quiet.title == "12:00:10–12:00:20: none finished"
    assert last.rects[0].height == VIEW_HEIGHT / 2
    assert max(r.x + r.width for bar in chart.bars for r in bar.rects) <= VIEW_WIDTH
    assert "15 sessions finished between 2026-01-01 12:00:00 UTC and 12:00:30 UTC" \
        in chart.summary


def test_an_empty_chart_says_so() -> None:
    chart = throughput_chart(Throughput(1, []))
    assert chart.empty and chart.summary == "No session has finished yet."


# --------------------------------------------------------------------------- job view


def job(state: str = "running", **counts: int) -> dict[str, Any]:
    base = {"matched": 0, "pending": 0, "queued": 0, "running": 0, "succeeded": 0,
            "failed": 0, "skipped": 0, "cancelled": 0}
    return {"id": "bf_1", "state": state, "counts": base | counts, "error_kinds": {},
            "usage": {"cost_usd": 0.5}}


def test_rate_and_eta_from_the_last_minute() -> None:
    view = job_view(job(matched=1000, succeeded=400, pending=600), Activity(120, 60.0))
    assert view.rate_per_min == 120 and view.eta_s == 300 and view.percent == "40%"
    young = job_view(job(matched=100, succeeded=10, pending=90), Activity(10, 20.0))
    assert young.rate_per_min == 30  # 10 in the job's first 20 s
    paused = job_view(job("paused", matched=10, pending=10), Activity(5, 60.0))
    assert paused.rate_per_min is None and paused.eta_s is None and not paused.live


def test_progress_segments_and_cost_against_a_cap() -> None:
    document = job("completed", matched=4, succeeded=2, failed=1, skipped=1) | {
        "max_cost_usd": 2.0}
    view = job_view(document, None)
    assert [(s.state, s.width) for s in view.segments] == [
        ("succeeded", "50.00%"), ("failed", "25.00%"), ("skipped", "25.00%")]
    assert view.done == 4 and view.done_percent == 100 and view.cost_share == "25.0%"
    assert job_view(job(), None).cost_share is None


@pytest.mark.parametrize(("share", "text"), [(0, "0%"), (0.001, "<1%"), (0.5, "50%"),
                                             (0.999, ">99%"), (1, "100%")])
def test_percent_text(share: float, text: str) -> None:
    assert percent_text(share) == text


@pytest.mark.parametrize(("state", "failed", "actions"), [
    ("running", 0, ("pause", "cancel")),
    ("running", 2, ("pause", "requeue", "cancel")),
    ("paused", 1, ("resume", "requeue", "cancel", "revert")),
    ("completed", 0, ("revert",)),
    ("completed", 3, ("requeue", "revert")),
    ("cancelled", 3, ("revert",)),
])
def test_the_buttons_a_state_allows(state: str, failed: int, actions: tuple[str, ...]) -> None:
    assert allowed_actions(state, failed) == actions


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (4.4, "4 s"), (61, "1 min"), (3600 * 3 + 300, "3 h 05 min"),
    (86400 * 2 + 3600 * 4, "2 d 4 h")])
def test_durations(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text


def test_analysis_rows_name_custom_fields_as_the_report_does() -> None:
    rows = analysis_rows({"call_summary": "Booked", "call_successful": True,
                          "custom_analysis_data": {"intent": "booking", "score": None}})
    assert [(r.field, r.value.text, r.value.kind) for r in rows] == [
        ("call_summary", "Booked", "text"), ("call_successful", "true", "json"),
        ("custom_analysis_data.intent", "booking", "text"),
        ("custom_analysis_data.score", "null", "null")]
