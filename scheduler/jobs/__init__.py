"""The job model: filters and options, which sessions a job takes (selection), planning (the
expansion into items), estimates, the import of sessions, operator operations, API keys, the
audit trail, and the read models (the job and session JSON documents)."""
