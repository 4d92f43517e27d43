"""The system's processes for one run: the stand-in, workers and the scheduler, all real."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.dev import processes
from scheduler.dev.processes import free_port

READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Tuning:
    """Short leases and deadlines, so recoveries take seconds, not the production minutes."""

    workers: int = 2
    concurrency: int = 16
    latency_ms: int = 30
    lease_s: float = 5.0
    lost_message_grace_s: float = 3.0
    reconcile_interval_s: float = 1.0
    llm_timeout_s: float = 3.0
    hang_s: float = 5.0
    # Generous, so that 20% transient faults never exhaust an item's attempts by chance
    # (0.2 ** 10 per item) and every failure in a run is a planted permanent one.
    max_attempts: int = 10

    def env(self) -> dict[str, str]:
        return {
            "BACKFILL_LLM": "stub",
            "ANTHROPIC_API_KEY": "",  # never send a real key to the stand-in
            "BACKFILL_LEASE_S": str(self.lease_s),
            "BACKFILL_LOST_MESSAGE_GRACE_S": str(self.lost_message_grace_s),
            "BACKFILL_RECONCILE_INTERVAL_S": str(self.reconcile_interval_s),
            "BACKFILL_QUEUED_DEADLINE_S": "300",
            "BACKFILL_LLM_TIMEOUT_S": str(self.llm_timeout_s),
            "BACKFILL_MAX_ATTEMPTS": str(self.max_attempts),
            "BACKFILL_RETRY_BASE_S": "0.2",
            "BACKFILL_RETRY_CAP_S": "2",
            "BACKFILL_DISPATCH_INTERVAL_S": "0.2",
            "BACKFILL_DB_CONNECT_TIMEOUT_S": "3",
            "BACKFILL_DB_STATEMENT_TIMEOUT_MS": "10000",
            "BACKFILL_LEADER_RETRY_S": "0.5",
        }


@dataclass
class Fleet:
    env: dict[str, str]
    log_dir: Path
    tuning: Tuning
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _started: int = 0

    def start_all(self, rules: Mapping[str, str]) -> None:
        """The stand-in, the workers and the scheduler, started side by side (each takes
        seconds to import on a busy machine), then awaited."""
        port = free_port()
        self.env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
        args = ["llm-stub", "--port", str(port), "--latency-ms", str(self.tuning.latency_ms),
                "--hang-s", str(self.tuning.hang_s)]
        for session_id, fault in rules.items():
            args += ["--fail-session", f"{session_id}={fault}"]
        self.others.append(self._start(args, "llm-stub"))
        scheduler = self._start(["scheduler"], "scheduler")
        self.others.append(scheduler)
        self.start_workers(self.tuning.workers)
        processes.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=READY_TIMEOUT_S)
        processes.wait_for_log(self.log_dir / "scheduler.log", "scheduler running", scheduler,
                               timeout_s=READY_TIMEOUT_S)

    def start_workers(self, count: int) -> None:
        """Started side by side, then awaited."""
        started = []
        for _ in range(count):
            self._started += 1
            name = f"worker-{self._started}"
            started.append((self._start(
                ["worker", "--concurrency", str(self.tuning.concurrency), "--",
                 "--hostname", f"chaos-{name}@%h"], name), name))
        for process, name in started:
            self.workers.append(process)
            processes.wait_for_log(self.log_dir / f"{name}.log", "ready.", process,
                                   timeout_s=READY_TIMEOUT_S)

    def kill_worker(self) -> None:
        """SIGKILL the oldest worker: no warm shutdown, its in-flight tasks die with it."""
        victim = self.workers.pop(0)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)

    def stop(self) -> None:
        """SIGTERM to everything at once, then wait (SIGKILL whatever hangs)."""
        running = [p for p in [*self.workers, *self.others] if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.workers.clear()
        self.others.clear()

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log_path = self.log_dir / f"{name}.log"
        log_path.unlink(missing_ok=True)
        return processes.start(processes.backfill_command(*args), log_path, self.env)


