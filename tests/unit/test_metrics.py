"""shared.metrics: DESIGN's names and labels, no id as a label, and the recording helpers."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from scheduler.dev.processes import free_port
from shared import metrics
from shared.pricing import Tokens

ID_LABELS = {"job_id", "session_id", "workspace_id", "webhook_id", "event_id", "key"}


def defined() -> dict[str, tuple[type, tuple[str, ...]]]:
    """Every metric shared.metrics defines: exposed name → (kind, label names)."""
    found: dict[str, tuple[type, tuple[str, ...]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Histogram | Gauge):
            found[value._name] = (type(value), tuple(value._labelnames))
        elif isinstance(value, metrics.GaugeSpec):
            found[value.name] = (Gauge, value.labels)
    return found


def sample_value(name: str, **labels: str) -> float:
    body, _ = metrics.exposition()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_designs_metrics_have_designs_labels() -> None:
    found = defined()
    assert found["backfill_sessions"] == (Counter, ("outcome", "error_kind", "model"))
    assert found["backfill_llm_request_duration_seconds"] == (Histogram, ("model",))
    assert found["backfill_llm_tokens"] == (Counter, ("model", "type"))
    assert found["backfill_llm_cost_usd"] == (Counter, ("model",))
    assert found["backfill_ratelimit_wait_seconds"] == (Histogram, ())
    assert found["backfill_job_items"] == (Gauge, ("state",))
    assert found["backfill_jobs"] == (Gauge, ("state",))


def test_no_metric_takes_an_id_as_a_label() -> None:
    found = defined()
    assert len(found) >= 15
    for name, (_, labels) in found.items():
        assert name.startswith("backfill_"), name
        assert not ID_LABELS & set(labels), name


def test_sessions_without_an_error_kind_or_model_are_labelled_none() -> None:
    before = sample_value("backfill_sessions_total", outcome="skipped", error_kind="none",
                          model="none")
    metrics.count_session("skipped", None, None)
    assert sample_value("backfill_sessions_total", outcome="skipped", error_kind="none",
                        model="none") == before + 1


def test_billed_tokens_are_counted_by_type_with_their_cost() -> None:
    model = "claude-test-billing"
    metrics.count_billed(model, Tokens(input=100, output=20, cache_read=0, cache_write=7), 0.25)
    metrics.count_billed(model, Tokens(input=1, output=1), 0.0)
    values = {kind: sample_value("backfill_llm_tokens_total", model=model, type=kind)
              for kind in ("input", "output", "cache_read", "cache_write")}
    assert values == {"input": 101, "output": 21, "cache_read": 0, "cache_write": 7}
    assert sample_value("backfill_llm_cost_usd_total", model=model) == pytest.approx(0.25)


def test_a_request_without_an_answer_is_counted_but_not_timed() -> None:
    model = "claude-test-requests"
    metrics.count_llm_request(model, "429", 0.5)
    metrics.count_llm_request(model, "timeout", None)
    assert sample_value("backfill_llm_requests_total", model=model, status="429") == 1
    assert sample_value("backfill_llm_requests_total", model=model, status="timeout") == 1
    assert sample_value("backfill_llm_request_duration_seconds_count", model=model) == 1


def test_counters_have_no_created_series() -> None:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    assert b"_created" not in body


def test_serve_answers_metrics_over_http() -> None:
    port = free_port()
    metrics.serve(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text: Any = answer.read().decode()
    assert "# TYPE backfill_sessions_total counter" in text
    with pytest.raises(OSError):
        metrics.serve(port)  # taken: the caller turns it into a one-line error
