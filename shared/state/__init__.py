"""The only code that changes job, item, batch and run state.

Every statement that inserts, updates or deletes rows of `backfill_jobs`, `backfill_items`,
`backfill_batches` or `analysis_runs` (and the current-analysis columns of `sessions`) lives in
this package, as a function named for the transition it makes (a test holds every other module
to that). Each runs in the caller's transaction (a `Connection`), so a caller composes several
transitions atomically, and each is conditional on the state it expects, so a second delivery,
a claim whose lease was taken over, or two schedulers overlapping change nothing twice.

- `items`: an item's life — expand, queue, claim, renew its lease, retry later, finish, and
  the reconciler's and the operator's moves;
- `jobs`: a job's life — create, record its expansion, pause, resume, cancel, reopen,
  complete — and the one place that says which jobs are batch-mode; each change also logs
  `job_state` and writes its webhook event;
- `events`: the webhook outbox those changes write (the event and a delivery per endpoint);
- `runs`: the success write (the item, its `analysis_runs` row and the session's analysis);
- `batches`: the Message Batches a batch-mode job submitted;
- `budget`: a job's cap, spend and reservations — reserve within the cap, charge an item,
  settle into the job, pause at the cap.
"""
