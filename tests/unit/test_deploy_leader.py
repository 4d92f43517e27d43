"""The scheduler's leader loop and probes without services: a scripted lock stands in for
Postgres (tests/integration/test_scheduler_failover.py runs the real thing)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scheduler.cli.probes import probe_scheduler
from scheduler.run.leader import (
    Heartbeat,
    LeaderLoop,
    heartbeat_age_s,
    libpq_params,
    lock_key_parts,
)
from shared.settings import DEFAULT_LEADER_LOCK_KEY, Settings


@dataclass
class ScriptedLock:
    """Answers try_acquire/still_held from a script; stops the loop when the script ends."""

    answers: list[bool]
    stop: threading.Event
    key: int = 42
    last_error: str | None = None
    calls: list[str] = field(default_factory=list)

    def try_acquire(self) -> bool:
        return self._next("try_acquire")

    def still_held(self) -> bool:
        return self._next("still_held")

    def release(self) -> None:
        self.calls.append("release")

    def _next(self, name: str) -> bool:
        self.calls.append(name)
        if len(self.answers) == 1:
            self.stop.set()
        return self.answers.pop(0)


def run_loop(answers: list[bool], tick_result: int = 0) -> tuple[ScriptedLock, list[int]]:
    stop = threading.Event()
    lock = ScriptedLock(answers, stop)
    ticks: list[int] = []

    def tick() -> int:
        ticks.append(len(lock.calls))
        return tick_result

    loop = LeaderLoop(lock=lock, tick=tick, idle_s=0, retry_s=0)  # type: ignore[arg-type]
    loop.run(stop)
    return lock, ticks


def test_lock_key_parts_are_what_pg_locks_shows() -> None:
    assert lock_key_parts(DEFAULT_LEADER_LOCK_KEY) == (0x6261636B, 0x66696C6C)
    assert lock_key_parts(-1) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert lock_key_parts(5) == (0, 5)


def test_libpq_params_keep_the_socket_directory_and_credentials() -> None:
    params = libpq_params("postgresql+psycopg://postgres:pw@/backfill?host=/tmp/pg")
    assert params == {"user": "postgres", "password": "pw", "dbname": "backfill",
                      "host": "/tmp/pg"}
    assert libpq_params("postgresql://u@db:6543/x") == {"user": "u", "host": "db",
                                                         "port": 6543, "dbname": "x"}


def test_standby_never_ticks() -> None:
    lock, ticks = run_loop([False, False, False])
    assert ticks == []
    assert lock.calls == ["try_acquire"] * 3 + ["release"]


def test_leader_checks_the_lock_before_every_pass() -> None:
    lock, ticks = run_loop([True, True, True])
    assert lock.calls == ["try_acquire", "still_held", "still_held", "release"]
    assert ticks == [1, 2, 3]  # one pass after each successful check


def test_a_lost_lock_stops_dispatch_until_it_is_won_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backfill.scheduler.leader")
    lock, ticks = run_loop([True, False, False, True, True])
    assert lock.calls[:4] == ["try_acquire", "still_held", "try_acquire", "try_acquire"]
    assert ticks == [1, 4, 5]
    lines = [record.getMessage() for record in caplog.records
             if record.name == "backfill.scheduler.leader"]
    assert [line.split(" (")[0].split(";")[0] for line in lines] == [
        "scheduler is the leader", "scheduler lost the leader lock",
        "scheduler is the leader", "scheduler stopped"]


def test_a_failing_pass_does_not_end_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    lock = ScriptedLock([True, True, True], stop)
    passes: list[int] = []

    def tick() -> int:
        passes.append(1)
        raise RuntimeError("database restarting")

    LeaderLoop(lock=lock, tick=tick, idle_s=0, retry_s=0).run(stop)  # type: ignore[arg-type]
    assert len(passes) == 3 and lock.calls[-1] == "release"
    assert caplog.text.count("dispatch pass failed") == 3


def test_heartbeat_file_ages_and_probe_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "run" / "scheduler.alive"
    assert heartbeat_age_s(path) is None
    assert not probe_scheduler(path, 60).healthy
    Heartbeat(path).beat()
    assert probe_scheduler(path, 60).healthy
    old = time.time() - 300
    os.utime(path, (old, old))
    result = probe_scheduler(path, 60)
    assert not result.healthy and "limit 60s" in result.message
    assert not probe_scheduler(None, 60).healthy


def test_leader_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_LEADER_LOCK_KEY", "7")
    monkeypatch.setenv("BACKFILL_SCHEDULER_HEARTBEAT_FILE", "/tmp/x.alive")
    settings = Settings()
    assert (settings.leader_lock_key, settings.leader_retry_s,
            settings.scheduler_heartbeat_file) == (7, 1.0, Path("/tmp/x.alive"))
