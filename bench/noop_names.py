"""Names and data the baseline tasks share with the bench (importable without a broker)."""

from typing import Any

NOOP = "bench.noop"
SDK_CALL = "bench.sdk_call"
DONE_KEY = "bf:bench:noop_done"

AGENT_FIELDS: list[dict[str, Any]] = [
    {"type": "boolean", "name": "resolved", "description": "Was it resolved?"}]
"""The custom fields of the bench's agent: the pipeline's sessions and the SDK-call task's
request are of the same shape."""

