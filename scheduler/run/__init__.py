"""The control loop (`backfill scheduler`): the dispatcher with its window per job, the
reconciler, the Message Batches cycle for batch-mode jobs, and the leader lock that lets only
one scheduler of a deployment dispatch."""
