"""Webhooks: a workspace's endpoints are told when one of its backfills completes, pauses or
is cancelled.

The feature has four parts:

- the registry (`registry`): endpoints per workspace, with their secrets encrypted at rest;
- delivery (`delivery`): events kept in Postgres (written with each job state change by
  `shared.state.events`) and POSTed until an endpoint answers 2xx, with backoff, for more
  than a day, across restarts;
- signing: the `Backfill-Signature` header a receiver checks;
- the address policy: an endpoint must be https and reach only public addresses.

The pure pieces, with no database and no HTTP: `signing` (signatures, secrets), `addresses`
(the URL and address rule), `secretbox` (encryption at rest under `BACKFILL_SECRET_KEY`),
`backoff` (the retry schedule) and `events` (the exact body bytes). The registry and the
delivery loop are built on them.
"""
