"""BACKFILL_RL_SHARE on real processes, against the stand-in's request window (`--rpm-limit`):
backfills use at most their share of the limit in any window, and when live traffic on the same
key uses more of a window than its part, backfills yield (the live traffic is never refused).

The window is scaled down (L requests per 4 s instead of per minute) to keep the runs short;
the buckets' period is scaled the same way. A share outside (0, 1] stops a component at start
with one line naming the variable.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from bisect import bisect_left
from collections.abc import Iterator

import pytest

from scheduler.dev import processes
from scheduler.jobs import planner
from tests.integration.conftest import LOG_DIR
from tests.support import spend
from tests.support.spend import SpendRun

pytestmark = pytest.mark.integration

LIMIT = 20
WINDOW_S = 4.0
SHARE = 0.5
LIVE_MODEL = "claude-live-traffic"  # how the invoice tells live answers from backfill ones


def max_in_any_window(times: list[float], window_s: float) -> int:
    """The most requests in any half-open window [t, t + window) starting at a request."""
    ordered = sorted(times)
    return max((bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)),
               default=0)


@pytest.fixture(scope="module")
def run(database_url: str, broker_url: str) -> Iterator[SpendRun]:
    env = {"BACKFILL_RL_REQUESTS_PER_MIN": str(LIMIT), "BACKFILL_RL_PERIOD_S": str(WINDOW_S),
           "BACKFILL_RL_SHARE": str(SHARE), "BACKFILL_RL_MAX_WAIT_S": "30"}
    with spend.spend_run(database_url, broker_url, LOG_DIR, rpm_limit=LIMIT,
                         rl_window_s=WINDOW_S, env=env) as spend_run:
        spend_run.start_scheduler()
        for n in range(2):
            spend_run.start_worker(f"worker-share-{n}", concurrency=4)
        yield spend_run


def backfill(run: SpendRun, sessions: int) -> str:
    workspace_id = f"ws_share_{secrets.token_hex(3)}"
    haiku = spend.agents(secrets.token_hex(4))[0]
    spend.seed_workspace(run.db, workspace_id, [haiku], {haiku.agent_id: {"all": sessions}})
    return planner.create_job(run.db, run.settings, workspace_id, "call",
                              spend.filters(haiku.agent_id)).job_id


def backfill_times(run: SpendRun, since: int) -> list[float]:
    return [answer.at for answer in run.stub.billed[since:] if answer.model != LIVE_MODEL]


def test_backfills_never_exceed_their_share_of_a_window(run: SpendRun) -> None:
    since = len(run.stub.billed)
    job = run.wait_for(backfill(run, sessions=24), ["completed"], timeout_s=120)
    assert job["counts"]["succeeded"] == 24
    times = backfill_times(run, since)
    assert len(times) == 24
    assert max_in_any_window(times, WINDOW_S) <= SHARE * LIMIT
    window = run.stub.request_window
    assert window is not None and window.rejected == []


class LiveTraffic:
    """The platform's live analysis on the same key: `per_window` requests per window,
    evenly, and bursts on demand; every answer's status is kept."""

    def __init__(self, stub_url: str, per_window: int) -> None:
        self.url = f"{stub_url}/v1/messages"
        self.interval_s = WINDOW_S / per_window
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._steady, daemon=True)

    def send(self) -> None:
        body = json.dumps({"model": LIVE_MODEL, "max_tokens": 16,
                           "messages": [{"role": "user", "content": "live call"}]}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "x-api-key": "live", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                self.statuses.append(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            self.statuses.append(exc.code)

    def burst(self, requests: int) -> None:
        senders = [threading.Thread(target=self.send) for _ in range(requests)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(10)

    def _steady(self) -> None:
        while not self.stop.is_set():
            self.send()
            self.stop.wait(self.interval_s)


def test_backfills_leave_live_traffic_its_part_of_every_window(run: SpendRun) -> None:
    """Live traffic takes 6 of the 20 requests of a window; backfills may then take only
    10 - 6 (never the last 10, live traffic's part), so a live burst of 8 more still fits. A
    backfill that took its whole share beside the live traffic (6 + 10 + 8 > 20) would get
    the burst refused."""
    live = LiveTraffic(run.stub_url, per_window=6)
    live.thread.start()
    since = len(run.stub.billed)
    job_id = backfill(run, sessions=30)
    try:
        time.sleep(3 * WINDOW_S)
        live.burst(8)
        time.sleep(WINDOW_S)
    finally:
        live.stop.set()
        live.thread.join(10)
    assert len(live.statuses) >= 20
    assert set(live.statuses) == {200}, live.statuses  # live traffic was never refused
    assert backfill_times(run, since)  # backfills did run beside it
    job = run.wait_for(job_id, ["completed"], timeout_s=120)
    assert job["counts"]["succeeded"] == 30


@pytest.mark.parametrize(("component", "share"), [
    ("worker", "0"), ("worker", "1.5"), ("worker", "half"), ("scheduler", "-0.2")])
def test_a_share_outside_0_1_stops_a_component_with_one_line(run: SpendRun, component: str,
                                                             share: str) -> None:
    result = subprocess.run(processes.backfill_command(component),
                            env={**os.environ, **run.env, "BACKFILL_RL_SHARE": share},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "BACKFILL_RL_SHARE" in lines[0] and "Traceback" not in result.stderr
