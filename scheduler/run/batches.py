"""Message Batches mode: the scheduler (leader only) analyses batch-mode jobs through
`client.messages.batches` instead of one Celery task per session.

One cycle, run from every dispatcher pass:

1. **Poll** each open batch when due (soon after submission, backing off to
   `BACKFILL_BATCH_POLL_INTERVAL_S`). While it runs, its job's running items get their lease
   renewed (`BACKFILL_BATCH_LEASE_S`, above the API's 24 h horizon), so the reconciler leaves
   them alone. Once `ended`, each result goes through `shared.pipeline`, the pipeline of the
   live worker: `succeeded` is interpreted and recorded like a live answer; `errored` maps its
   error type to the item's error kind; `expired` and `canceled` are transient. The retry
   policy then puts retried items back to `pending` with a `not_before`, so they join a later
   batch.
2. **Submit**: for each running batch-mode job, claim up to `BACKFILL_BATCH_SUBMIT_LIMIT`
   pending items (`running`, attempt + 1, the ordinary `BACKFILL_LEASE_S` until their batch
   is recorded, then the long batch lease), prepare each request with
   `shared.pipeline.prepare` (as live), and create batches of at most
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
from typing import TYPE_CHECKING, Any, cast

from scheduler.run import budget as spend
from shared import errors, llm, pipeline
from shared.db import Database
from shared.pipeline import Prepared
from shared.settings import Settings
from shared.state import batches, budget, items, jobs
from shared.state.items import Claim
from shared.vocabulary import BATCH, Outcome

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("backfill.scheduler.batches")

CUSTOM_ID_PREFIX = "i"
CUSTOM_ID_DIGEST_CHARS = 40
# `{"requests":[` … `]}` and a comma per request, around the requests' own JSON.
_ENVELOPE_BYTES = 16
FIRST_POLL_S = 0.5
# The scheduler's few batch calls (create, retrieve, results) may retry inside the SDK: a
# failed call is a whole pass lost, not one session's attempt.
BATCH_CLIENT_RETRIES = 2


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


def result_error(result: Any) -> errors.AnalysisError:
    """An `errored`, `expired` or `canceled` batch result as the item's error."""
    if result.type == "expired":
        return errors.LLMTimeout("the batch expired before this request was processed")
    if result.type == "canceled":
        return errors.LLMServerError("the request was canceled with its batch")
    inner = getattr(getattr(result, "error", None), "error", None)
    return llm.error_for_type(getattr(inner, "type", None),
                                  str(getattr(inner, "message", "batch request errored")))


# --------------------------------------------------------------------------- the cycle


@dataclass(frozen=True)
class _Request:
    prepared: Prepared
    custom_id: str

    @property
    def claim(self) -> Claim:
        return self.prepared.resolved.claim

    @property
    def params(self) -> dict[str, Any]:
        return self.prepared.request


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
            batch_jobs = jobs.running_jobs(tx, BATCH)
        for job_id in batch_jobs:
            done += self.submit_job(job_id)
        return done

    def _client(self) -> anthropic.Anthropic:
        if self.client is None:
            self.client = llm.make_client(self.settings, max_retries=BATCH_CLIENT_RETRIES)
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
        # the reconciler takes the items back soon instead of a day later. A capped job
        # claims as many as its budget has room for, each reserving its estimate.
        with self.db.transaction() as tx:
            claims, reserved = budget.claim_within_budget(
                tx, job_id, self.settings.batch_submit_limit, self.settings.lease_s,
                self.settings.budget_margin)
            if reserved.exhausted:
                spend.exhausted(tx, job_id, reserved.next_usd)
            return claims

    def _build_requests(self, claims: list[Claim]) -> list[_Request]:
        """Requests of the claims that need one; skips and missing configurations end here."""
        built: list[_Request] = []
        with self.db.transaction() as tx:
            for claim in claims:
                prepared = pipeline.prepare(tx, self.settings, claim)
                if isinstance(prepared, Prepared):
                    built.append(_Request(prepared, custom_id_for(
                        claim.job_id, claim.session_id, claim.attempt)))
        return built

    @staticmethod
    def _wire(request: _Request) -> dict[str, Any]:
        return {"custom_id": request.custom_id, "params": request.params}

    def _submit_chunk(self, client: anthropic.Anthropic, job_id: str, chunk: list[_Request],
                      wire: list[dict[str, Any]]) -> None:
        import anthropic

        try:
            batch = client.messages.batches.create(requests=cast(Any, wire))
        except anthropic.APIError as exc:
            # The whole chunk failed the same way: each item follows the retry policy.
            self._fail_each(chunk, llm.wrap_api_error(exc))
            return
        with self.db.transaction() as tx:
            batches.record(tx, batch.id, job_id, len(chunk))
            items.hold_for_batch(tx, job_id, [r.claim for r in chunk],
                                 self.settings.batch_lease_s)
        self._polls[batch.id] = _PollSchedule(time.monotonic() + FIRST_POLL_S, FIRST_POLL_S)
        log.info("batch submitted", extra={"job_id": job_id, "batch_id": batch.id,
                                           "requests": len(chunk)})

    def _fail_each(self, requests: list[_Request], exc: errors.AnalysisError) -> None:
        if not requests:
            return
        with self.db.transaction() as tx:
            for request in requests:
                pipeline.record_failure(tx, self.settings, request.claim, exc,
                                        model=request.prepared.resolved.config.model)

    # ----------------------------------------------------------------- poll

    def poll_due(self) -> int:
        """Poll the open batches whose time has come; returns how many results were written."""
        with self.db.transaction() as tx:
            open_batches = batches.open_batches(tx)
        written = 0
        now = time.monotonic()
        for batch in open_batches:
            schedule = self._polls.setdefault(batch.batch_id, _PollSchedule(now, FIRST_POLL_S))
            if schedule.due <= now:
                written += self._poll(batch.batch_id, batch.job_id, batch.submitted_at, schedule)
        return written

    def _poll(self, batch_id: str, job_id: str, submitted_at: datetime,
              schedule: _PollSchedule) -> int:
        import anthropic

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
            batches.end(tx, batch_id, state)
        self._polls.pop(batch_id, None)

    def _renew_leases(self, job_id: str) -> None:
        with self.db.transaction() as tx:
            items.renew_running(tx, job_id, self.settings.batch_lease_s)

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
            claims = items.running_claims(tx, job_id)
        return {custom_id_for(c.job_id, c.session_id, c.attempt): c for c in claims}

    def _write_result(self, claim: Claim, result: Any, latency_ms: int) -> Outcome:
        """One result through the live pipeline; returns the outcome."""
        message = result.message.to_dict() if result.type == "succeeded" else None
        with self.db.transaction() as tx:
            if message is not None:  # billed, whatever becomes of it
                pipeline.record_charge(tx, self.settings, claim, message, BATCH)
            session = pipeline.load_or_skip(tx, claim)
            if session is None:
                return "skipped"
            if message is None:
                return pipeline.record_failure(tx, self.settings, claim, result_error(result))
            resolved = pipeline.resolve(tx, self.settings, claim, session)
            if isinstance(resolved, str):
                return resolved
            try:
                answer = pipeline.interpret(resolved.config, message)
            except errors.AnalysisError as exc:
                return pipeline.record_failure(tx, self.settings, claim, exc)
            return pipeline.record_success(tx, resolved, answer, latency_ms)


def _elapsed_ms(since: datetime) -> int:
    """How long the batch took, as the run's latency (bounded to the column's range)."""
    elapsed = (datetime.now(UTC) - since).total_seconds() * 1000
    return max(0, min(int(elapsed), 2**31 - 1))

