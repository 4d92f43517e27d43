"""`backfill probe worker`, the worker health check of deploy/ (compose and Kubernetes), against
the session's real Celery worker: no Flower, no HTTP port."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Any

import pytest

from scheduler.dev import processes
from scheduler.dev.processes import free_port

pytestmark = pytest.mark.integration


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(processes.backfill_command("probe", "worker", *args),
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_running_worker_answers(pipeline: Any) -> None:
    # The pipeline's worker is named worker-main@%h; a container's is celery@HOSTNAME.
    result = probe(pipeline.env, "--destination", f"worker-main@{socket.gethostname()}",
                   "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert "answered" in result.stderr


def test_a_silent_worker_fails_the_probe(pipeline: Any) -> None:
    result = probe(pipeline.env, "--destination", "celery@no-such-worker", "--timeout", "1")
    assert result.returncode == 1
    assert "did not answer" in result.stderr


def test_an_unreachable_broker_does_not_fail_the_worker() -> None:
    # Restarting workers cannot bring Redis back: the probe passes and says why.
    result = probe({"BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}, "--timeout", "1")
    assert result.returncode == 0
    assert "broker unreachable" in result.stderr
