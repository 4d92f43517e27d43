"""Webhook delivery: the scheduler's loop that POSTs the outbox's events (written with each job
state change by `shared.state.events`) until every endpoint has answered 2xx.

Every scheduler process runs one `WebhookSender` thread beside its dispatcher, leader or
standby alike: a delivery is claimed in Postgres, so no two schedulers send it at once. A pass:

1. claims up to PARALLEL due deliveries (`FOR UPDATE SKIP LOCKED`): the attempt is counted and
   `next_attempt_at` moves CLAIM_LEASE_S ahead, so a scheduler that dies in the middle of an
   attempt leaves the delivery due again soon after. All state is in Postgres: every process
   may restart between attempts and nothing is lost (at least once);
2. attempts each on a small thread pool: the body (rendered with the job JSON at the event's
   first attempt, then kept: every retry sends the same bytes under the same event id), the
   endpoint's secret (decrypted), the URL checked again (DNS may have changed since it was
   added: `addresses.check_url`), and one POST to the address that check resolved, signed now
   (`Backfill-Signature`), within BACKFILL_WEBHOOK_TIMEOUT_S (10 s by default);
3. records it: delivered after a 2xx only; anything else (another status, a redirect, which
   is not followed, no answer in time, a URL refused now, a secret that cannot be decrypted)
   schedules the next attempt (`backoff`), until the event is older than the horizon (26 h):
   then the delivery is given up.

Logs name the webhook and the event by id, never the URL (it may carry a token) or the secret.
Events of one endpoint may arrive out of order (a retried `paused` after a `completed`): a
receiver orders them by `created_at`, and `job.state` is the job's state at the first attempt.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import certifi
import httpx
from sqlalchemy import text

from scheduler.jobs import documents
from scheduler.webhooks import backoff
from scheduler.webhooks.addresses import (
    CheckedUrl,
    InvalidWebhookUrl,
    Resolver,
    check_url,
    system_resolve,
)
from scheduler.webhooks.events import event_body
from scheduler.webhooks.secretbox import SecretKeyMissing, WrongSecretKey, deployment_box
from scheduler.webhooks.signing import SIGNATURE_HEADER, signature_header
from shared import metrics
from shared.db import Database
from shared.settings import Settings

log = logging.getLogger("backfill.scheduler.webhooks")

PARALLEL = 8
POLL_S = 1.0
# Longer than one attempt can take (the name resolution's 5 s, the POST's 10 s), so a live
# scheduler always records its attempt before anyone else may claim the delivery again.
CLAIM_LEASE_S = 60.0
USER_AGENT = "postcall-backfill-webhooks/1"
EVENT_ID_HEADER = "Backfill-Event-Id"

_CLAIM_DUE = text("""
    UPDATE webhook_deliveries AS d
       SET attempts = d.attempts + 1,
           next_attempt_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM (SELECT event_id, webhook_id FROM webhook_deliveries
             WHERE delivered_at IS NULL AND gave_up_at IS NULL
               AND next_attempt_at <= clock_timestamp()
             ORDER BY next_attempt_at
             LIMIT :limit
               FOR UPDATE SKIP LOCKED) AS due,
           webhooks AS w, webhook_events AS e
     WHERE d.event_id = due.event_id AND d.webhook_id = due.webhook_id
       AND w.id = d.webhook_id AND e.id = d.event_id
 RETURNING d.event_id, d.webhook_id, d.attempts AS attempt, w.url, w.secret_encrypted,
           e.job_id, e.type, e.created_at, e.body, clock_timestamp() AS claimed_at
""")
# The first attempt renders the body; a concurrent first attempt keeps whichever came first.
_KEEP_BODY = text("""
    UPDATE webhook_events SET body = COALESCE(body, :body) WHERE id = :id RETURNING body
""")
_DELIVERED = text("""
    UPDATE webhook_deliveries
       SET delivered_at = clock_timestamp(), last_status = :status, last_error = NULL
     WHERE event_id = :event_id AND webhook_id = :webhook_id
       AND delivered_at IS NULL AND gave_up_at IS NULL
""")
# Fenced on the attempt: a late write of an attempt whose lease was taken over changes nothing.
_FAILED = text("""
    UPDATE webhook_deliveries
       SET last_status = :status, last_error = :error,
           next_attempt_at = clock_timestamp() + make_interval(secs => :delay_s),
           gave_up_at = CASE WHEN :give_up THEN clock_timestamp() END
     WHERE event_id = :event_id AND webhook_id = :webhook_id AND attempts = :attempt
       AND delivered_at IS NULL AND gave_up_at IS NULL
""")


@dataclass(frozen=True)
class Claimed:
    """One attempt at one event for one endpoint, as claimed."""

    event_id: str
    webhook_id: str
    attempt: int
    url: str
    secret_encrypted: str
    job_id: str
    type: str
    created_at: datetime
    body: bytes | None
    claimed_at: datetime


@dataclass(frozen=True)
class Attempt:
    """How an attempt went: `failure` is a short word for logs and metrics, `detail` the
    sentence kept with the delivery (for the operator)."""

    status: int | None
    failure: str | None = None
    detail: str | None = None

    @property
    def delivered(self) -> bool:
        return self.failure is None


@dataclass
class WebhookSender:
    db: Database
    settings: Settings
    resolve: Resolver = system_resolve
    _tls: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # One context for every attempt (loading the CA bundle costs milliseconds).
        self._tls = ssl.create_default_context(cafile=certifi.where())

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="webhook-sender",
                                  daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._pass():
                stop.wait(POLL_S)

    def _pass(self) -> int:
        try:
            return self.deliver_due()
        except Exception:  # Postgres away: claimed deliveries come due again after the lease
            log.exception("webhook delivery pass failed; retrying")
            return 0

    def deliver_due(self) -> int:
        """Attempt every due delivery this pass can claim, side by side (one slow endpoint
        does not hold up the others); returns how many."""
        with self.db.transaction() as tx:
            rows = tx.execute(_CLAIM_DUE, {"lease_s": CLAIM_LEASE_S, "limit": PARALLEL}).all()
        claimed = [Claimed(**row._mapping) for row in rows]
        if claimed:
            with ThreadPoolExecutor(len(claimed), thread_name_prefix="webhook") as pool:
                list(pool.map(self.deliver, claimed))
        return len(claimed)

    def deliver(self, delivery: Claimed) -> Attempt:
        attempt = self.attempt(delivery)
        self._record(delivery, attempt)
        return attempt

    def attempt(self, delivery: Claimed) -> Attempt:
        try:
            secret = deployment_box(self.settings.secret_key).decrypt(delivery.secret_encrypted)
            checked = check_url(delivery.url, allow_private=self.settings.webhook_allow_private,
                                resolve=self.resolve)
        except SecretKeyMissing:
            return Attempt(None, "no_key", "BACKFILL_SECRET_KEY is not set on this scheduler")
        except WrongSecretKey:
            return Attempt(None, "wrong_key", "the secret cannot be decrypted with "
                                              "BACKFILL_SECRET_KEY (another key?)")
        except InvalidWebhookUrl as exc:
            return Attempt(None, "url_refused", f"the URL is refused now: {exc}")
        body = self._body(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: delivery.event_id,
            SIGNATURE_HEADER: signature_header(secret, body, int(time.time())),
        }
        return post(checked, body, headers, timeout_s=self.settings.webhook_timeout_s,
                    tls=self._tls)

    def _body(self, delivery: Claimed) -> bytes:
        if delivery.body is not None:
            return bytes(delivery.body)
        with self.db.transaction() as tx:
            job = documents.job_json(tx, self.settings, delivery.job_id)
            body = event_body(delivery.event_id, delivery.type, delivery.created_at, job)
            return bytes(tx.execute(_KEEP_BODY, {"id": delivery.event_id,
                                                 "body": body}).scalar_one())

    def _record(self, delivery: Claimed, attempt: Attempt) -> None:
        ids = {"event_id": delivery.event_id, "webhook_id": delivery.webhook_id}
        give_up = (not attempt.delivered
                   and backoff.gives_up(delivery.created_at, delivery.claimed_at))
        with self.db.transaction() as tx:
            if attempt.delivered:
                tx.execute(_DELIVERED, {**ids, "status": attempt.status})
            else:
                delay_s = self._delay_s(delivery.attempt)
                tx.execute(_FAILED, {**ids, "status": attempt.status, "error": attempt.detail,
                                     "delay_s": delay_s, "give_up": give_up,
                                     "attempt": delivery.attempt})
        result = "delivered" if attempt.delivered else ("gave_up" if give_up else "retry")
        metrics.WEBHOOK_DELIVERIES.labels(result).inc()
        log.log(logging.INFO if attempt.delivered else logging.WARNING, "webhook_delivery",
                extra={"webhook_id": delivery.webhook_id, "event_id": delivery.event_id,
                       "job_id": delivery.job_id, "type": delivery.type,
                       "attempt": delivery.attempt, "result": result,
                       "status": attempt.status, "failure": attempt.failure})

    def _delay_s(self, attempt: int) -> float:
        base_s = self.settings.webhook_retry_base_s
        if base_s is None:
            return backoff.next_attempt_delay_s(attempt)
        return backoff.next_attempt_delay_s(attempt, base_s=base_s)


def post(checked: CheckedUrl, body: bytes, headers: dict[str, str], *, timeout_s: float,
         tls: ssl.SSLContext) -> Attempt:
    """One POST to the address `check_url` resolved, never to a second resolution of the name
    (which DNS could answer differently): the name goes in the Host header and as the TLS
    server name, so the certificate is still checked against it. A client per attempt, so no
    pooled connection made for one name is reused for another on the same address; no proxy
    from the environment (it would resolve the name itself); the answer's body is not read."""
    url = httpx.URL(checked.url)
    target = url.copy_with(host=checked.addresses[0])
    extensions = {"sni_hostname": checked.host} if url.scheme == "https" else {}
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False,
                          verify=tls) as client, client.stream(
                "POST", target, content=body, extensions=extensions,
                headers={**headers, "Host": url.netloc.decode("ascii")}) as response:
            status = response.status_code
    except httpx.TimeoutException:
        return Attempt(None, "timeout", f"no answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Attempt(None, "connection", f"cannot reach the endpoint: {type(exc).__name__}")
    if 200 <= status < 300:
        return Attempt(status)
    return Attempt(status, "status", f"the endpoint answered {status}")
