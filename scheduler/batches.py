"""Message Batches mode: the scheduler (leader only) analyses batch-mode jobs through
`client.messages.batches` instead of one Celery task per session.

One cycle, run from every dispatcher pass:

1. **Poll** each open batch when due (soon after submission, backing off to
   `BACKFILL_BATCH_POLL_INTERVAL_S`). While it runs, its job's running items get their lease
   renewed (`BACKFILL_BATCH_LEASE_S`, above the API's 24 h horizon), so the reconciler leaves
   them alone. Once `ended`, each result goes through `shared.results`, the write path of the
   live worker: `succeeded` is parsed and written like a live answer; `errored` maps its error
   type to the item's error kind; `expired` and `canceled` are transient. The retry policy
   then puts retried items back to `pending` with a `not_before`, so they join a later batch.
2. **Submit**: for each running batch-mode job, claim up to `BACKFILL_BATCH_SUBMIT_LIMIT`
   pending items (`running`, attempt + 1, the ordinary `BACKFILL_LEASE_S` until their batch
   is recorded, then the long batch lease), build each request with
   `shared.analysis.build_request` (as live), and create batches of at most
   `BACKFILL_BATCH_MAX_REQUESTS` requests and `BACKFILL_BATCH_MAX_BYTES` bytes.

A request's `custom_id` is a digest of (job, session, attempt): safe for the API's
`^[a-zA-Z0-9_-]{1,64}$` whatever the session id holds, and mapped back by recomputing it for
the job's running items. Because the attempt is part of it, a result for a claim that was
since taken back (lease expired, item retried) matches nothing and changes nothing — the same
fencing the worker's writes have.

The configuration is resolved again when a result is written (as the worker resolves it once
per run); a draft edited while a batch runs can make the answer not fit the new schema, which
is `llm_invalid_output` and retried with the new configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import anthropic
from sqlalchemy import Connection, text

from shared import analysis, errors, results
from shared.db import Database
from shared.results import Claim
from shared.settings import Settings

log = logging.getLogger("backfill.scheduler.batches")

STUB_API_KEY = "local-stand-in"
BATCH_MODE = "batch"
CUSTOM_ID_PREFIX = "i"
CUSTOM_ID_DIGEST_CHARS = 40
# `{"requests":[` … `]}` and a comma per request, around the requests' own JSON.
_ENVELOPE_BYTES = 16
FIRST_POLL_S = 0.5

_BATCH_JOBS = text("""
    SELECT id FROM backfill_jobs
     WHERE state = 'running' AND options @> '{"mode": "batch"}'::jsonb
     ORDER BY created_at
""")

_CLAIM_FOR_BATCH = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           queued_at = clock_timestamp(), not_before = NULL,
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM (SELECT job_id, session_id FROM backfill_items
             WHERE job_id = :job_id AND state = 'pending'
               AND (not_before IS NULL OR not_before <= clock_timestamp())
             ORDER BY session_id
             LIMIT :limit
               FOR UPDATE SKIP LOCKED) AS next, backfill_jobs AS j
     WHERE i.job_id = next.job_id AND i.session_id = next.session_id
       AND j.id = i.job_id AND j.state = 'running'
 RETURNING i.session_id, i.attempts, i.started_at
""")

_RECORD_BATCH = text("""
    INSERT INTO backfill_batches (id, job_id, request_count) VALUES (:id, :job_id, :count)
""")

# Fenced on the attempt, like every write of a claim.
_HOLD_FOR_BATCH = text("""
    UPDATE backfill_items AS i
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:session_ids AS text[]), CAST(:attempts AS integer[]))
           AS c(session_id, attempt)
     WHERE i.job_id = :job_id AND i.session_id = c.session_id
       AND i.state = 'running' AND i.attempts = c.attempt
""")

_OPEN_BATCHES = text("""
    SELECT id, job_id, submitted_at FROM backfill_batches
     WHERE state = 'in_progress' ORDER BY submitted_at
""")

_END_BATCH = text("""
    UPDATE backfill_batches SET state = :state, ended_at = clock_timestamp() WHERE id = :id
""")

_RENEW_JOB_LEASES = text("""
    UPDATE backfill_items
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
     WHERE job_id = :job_id AND state = 'running'
""")

_RUNNING_CLAIMS = text("""
    SELECT session_id, attempts, started_at FROM backfill_items
     WHERE job_id = :job_id AND state = 'running'
""")


# --------------------------------------------------------------------------- pure helpers


def custom_id_for(job_id: str, session_id: str, attempt: int) -> str:
    """A request id the API accepts (`^[a-zA-Z0-9_-]{1,64}$`), unique per claim."""
    digest = hashlib.sha256(f"{job_id}\x00{session_id}\x00{attempt}".encode()).hexdigest()
    return CUSTOM_ID_PREFIX + digest[:CUSTOM_ID_DIGEST_CHARS]


def request_size(request: dict[str, Any]) -> int:
    """Bytes one request adds to the create body (its JSON plus a separator)."""
    return len(json.dumps(request, separators=(",", ":")).encode()) + 1


def chunk_requests(
    requests: Sequence[dict[str, Any]], max_requests: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """Consecutive chunks within both limits. A request too large on its own is the caller's
    to refuse first (it could never be sent)."""
    chunk: list[dict[str, Any]] = []
    size = _ENVELOPE_BYTES
    for request in requests:
        request_bytes = request_size(request)
        if chunk and (len(chunk) >= max_requests or size + request_bytes > max_bytes):
            yield chunk
            chunk, size = [], _ENVELOPE_BYTES
        chunk.append(request)
        size += request_bytes
    if chunk:
        yield chunk


def resolve_mode(requested: str | None, matched: int, threshold: int) -> str:
    """`live` or `batch`: an explicit mode wins; else batch above the threshold (0 = never)."""
    if requested is not None:
        return requested
    return BATCH_MODE if threshold > 0 and matched > threshold else "live"


def make_client(settings: Settings) -> anthropic.Anthropic:
    """The scheduler's own client (it may not import worker/); its few calls may retry."""
    if settings.llm_mode == "stub" and not settings.anthropic_base_url:
        raise errors.BackfillError(
            "BACKFILL_LLM=stub needs ANTHROPIC_BASE_URL pointing at `backfill llm-stub`"
        )
    return anthropic.Anthropic(
        api_key=settings.anthropic_api_key or STUB_API_KEY,
        base_url=settings.anthropic_base_url,
        max_retries=2,
        timeout=settings.llm_timeout_s,
    )


def result_error(result: Any) -> errors.AnalysisError:
    """An `errored`, `expired` or `canceled` batch result as the item's error."""
    if result.type == "expired":
        return errors.LLMTimeout("the batch expired before this request was processed")
    if result.type == "canceled":
        return errors.LLMServerError("the request was canceled with its batch")
    inner = getattr(getattr(result, "error", None), "error", None)
    return results.error_for_type(getattr(inner, "type", None),
                                  str(getattr(inner, "message", "batch request errored")))


# --------------------------------------------------------------------------- the cycle


@dataclass(frozen=True)
class _Request:
    claim: Claim
    custom_id: str
    params: dict[str, Any]


@dataclass
class _PollSchedule:
    due: float
    delay_s: float


@dataclass
class BatchCycle:
    db: Database
    settings: Settings
    client: anthropic.Anthropic | None = None
    _polls: dict[str, _PollSchedule] = field(default_factory=dict, init=False, repr=False)

    def step(self) -> int:
        """Poll due batches, then submit pending items; returns how much work was done."""
        done = self.poll_due()
        with self.db.transaction() as tx:
            jobs = [row.id for row in tx.execute(_BATCH_JOBS)]
        for job_id in jobs:
            done += self.submit_job(job_id)
        return done

    def _client(self) -> anthropic.Anthropic:
        if self.client is None:
            self.client = make_client(self.settings)
        return self.client

    # ----------------------------------------------------------------- submit

    def submit_job(self, job_id: str) -> int:
        """Claim pending items of one job and submit them; returns how many were claimed."""
        client = self._client()  # before claiming: without a client nothing is claimed
        claims = self._claim(job_id)
        if not claims:
            return 0
        requests = self._build_requests(claims)
        limit = self.settings.batch_max_bytes - _ENVELOPE_BYTES
        oversized = {r.custom_id for r in requests if request_size(self._wire(r)) > limit}
        self._fail_each([r for r in requests if r.custom_id in oversized], errors.LLMBadRequest(
            "the request is larger than one batch may be"))
        sendable = [r for r in requests if r.custom_id not in oversized]
        by_id = {r.custom_id: r for r in sendable}
        for chunk in chunk_requests([self._wire(r) for r in sendable],
                                    self.settings.batch_max_requests,
                                    self.settings.batch_max_bytes):
            self._submit_chunk(client, job_id, [by_id[wire["custom_id"]] for wire in chunk],
                               chunk)
        return len(claims)

    def _claim(self, job_id: str) -> list[Claim]:
        # The ordinary lease until the batch is recorded: if this process dies before that,
        # the reconciler takes the items back soon instead of a day later.
        with self.db.transaction() as tx:
            rows = tx.execute(_CLAIM_FOR_BATCH, {
                "job_id": job_id, "limit": self.settings.batch_submit_limit,
                "lease_s": self.settings.lease_s,
            })
            return [Claim(job_id, row.session_id, row.attempts, row.started_at) for row in rows]

    def _build_requests(self, claims: list[Claim]) -> list[_Request]:
        """Requests of the claims that need one; skips and missing configurations end here."""
        built: list[_Request] = []
        with self.db.transaction() as tx:
            for claim in claims:
                params = self._request_params(tx, claim)
                if params is not None:
                    built.append(_Request(claim, custom_id_for(
                        claim.job_id, claim.session_id, claim.attempt), params))
        return built

    def _request_params(self, tx: Connection, claim: Claim) -> dict[str, Any] | None:
        session = results.load_or_skip(tx, claim)
        if session is None:
            return None
        try:
            config = results.resolve_config(tx, self.settings, session)
        except errors.AnalysisError as exc:  # config_missing: failed at once, as live
            results.handle_failure(tx, self.settings, claim, exc)
            return None
        return analysis.build_request(config, session.transcript, self.settings.llm_max_tokens)

    @staticmethod
    def _wire(request: _Request) -> dict[str, Any]:
        return {"custom_id": request.custom_id, "params": request.params}

    def _submit_chunk(self, client: anthropic.Anthropic, job_id: str, chunk: list[_Request],
                      wire: list[dict[str, Any]]) -> None:
        try:
            batch = client.messages.batches.create(requests=cast(Any, wire))
        except anthropic.APIError as exc:
            # The whole chunk failed the same way: each item follows the retry policy.
            self._fail_each(chunk, results.wrap_api_error(exc))
            return
        with self.db.transaction() as tx:
            tx.execute(_RECORD_BATCH, {"id": batch.id, "job_id": job_id, "count": len(chunk)})
            tx.execute(_HOLD_FOR_BATCH, {
                "job_id": job_id, "lease_s": self.settings.batch_lease_s,
                "session_ids": [r.claim.session_id for r in chunk],
                "attempts": [r.claim.attempt for r in chunk],
            })
        self._polls[batch.id] = _PollSchedule(time.monotonic() + FIRST_POLL_S, FIRST_POLL_S)
        log.info("batch submitted", extra={"job_id": job_id, "batch_id": batch.id,
                                           "requests": len(chunk)})

    def _fail_each(self, requests: list[_Request], exc: errors.AnalysisError) -> None:
        if not requests:
            return
        with self.db.transaction() as tx:
            for request in requests:
                results.handle_failure(tx, self.settings, request.claim, exc)

    # ----------------------------------------------------------------- poll

    def poll_due(self) -> int:
        """Poll the open batches whose time has come; returns how many results were written."""
        with self.db.transaction() as tx:
            open_batches = tx.execute(_OPEN_BATCHES).all()
        written = 0
        now = time.monotonic()
        for row in open_batches:
            schedule = self._polls.setdefault(row.id, _PollSchedule(now, FIRST_POLL_S))
            if schedule.due <= now:
                written += self._poll(row.id, row.job_id, row.submitted_at, schedule)
        return written

    def _poll(self, batch_id: str, job_id: str, submitted_at: datetime,
              schedule: _PollSchedule) -> int:
        try:
            batch = self._client().messages.batches.retrieve(batch_id)
        except anthropic.NotFoundError:
            # The provider does not know it (another account or endpoint): stop polling; its
            # items are no longer renewed, so the reconciler takes them back when they lapse.
            log.warning("batch %s is unknown to the provider; no longer polled", batch_id)
            self._end(batch_id, "missing")
            return 0
        except anthropic.APIError as exc:
            log.warning("cannot poll batch %s: %s", batch_id, type(exc).__name__)
            batch = None
        if batch is None or batch.processing_status != "ended":
            if batch is not None:  # the provider still works on it: keep its items ours
                self._renew_leases(job_id)
            schedule.delay_s = min(schedule.delay_s * 2, self.settings.batch_poll_interval_s)
            schedule.due = time.monotonic() + schedule.delay_s
            return 0
        written = self._write_results(batch_id, job_id, submitted_at)
        self._end(batch_id, "ended")
        return written

    def _end(self, batch_id: str, state: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(_END_BATCH, {"id": batch_id, "state": state})
        self._polls.pop(batch_id, None)

    def _renew_leases(self, job_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(_RENEW_JOB_LEASES,
                       {"job_id": job_id, "lease_s": self.settings.batch_lease_s})

    def _write_results(self, batch_id: str, job_id: str, submitted_at: datetime) -> int:
        claims = self._running_claims(job_id)
        latency_ms = _elapsed_ms(submitted_at)
        written = 0
        for line in self._client().messages.batches.results(batch_id):
            claim = claims.get(line.custom_id)
            if claim is None:
                continue  # a claim since taken back (or not ours): its result changes nothing
            self._write_result(claim, line.result, latency_ms)
            written += 1
        log.info("batch results written", extra={"job_id": job_id, "batch_id": batch_id,
                                                 "results": written})
        return written

    def _running_claims(self, job_id: str) -> dict[str, Claim]:
        with self.db.transaction() as tx:
            rows = tx.execute(_RUNNING_CLAIMS, {"job_id": job_id}).all()
        claims = (Claim(job_id, row.session_id, row.attempts, row.started_at) for row in rows)
        return {custom_id_for(c.job_id, c.session_id, c.attempt): c for c in claims}

    def _write_result(self, claim: Claim, result: Any, latency_ms: int) -> str:
        """One result through the live write path; returns the outcome."""
        with self.db.transaction() as tx:
            session = results.load_or_skip(tx, claim)
            if session is None:
                return "skipped"
            try:
                if result.type != "succeeded":
                    raise result_error(result)
                config = results.resolve_config(tx, self.settings, session)
                answer = analysis.parse_answer(config, results.message_text(result.message))
            except errors.AnalysisError as exc:
                return results.handle_failure(tx, self.settings, claim, exc)
            usage = results.message_usage(result.message, latency_ms)
            return results.write_success(tx, claim, session, config, answer, usage)


def _elapsed_ms(since: datetime) -> int:
    """How long the batch took, as the run's latency (bounded to the column's range)."""
    elapsed = (datetime.now(UTC) - since).total_seconds() * 1000
    return max(0, min(int(elapsed), 2**31 - 1))

