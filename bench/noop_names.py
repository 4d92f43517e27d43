"""Names the no-op baseline shares with the bench (importable without a broker)."""

NOOP = "bench.noop"
DONE_KEY = "bf:bench:noop_done"
