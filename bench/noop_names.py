"""Names and data the baseline tasks share with the bench (importable without a broker)."""

from typing import Any

NOOP = "bench.noop"
SDK_CALL = "bench.sdk_call"
DONE_KEY = "bf:bench:noop_done"

AGENT_FIELDS: list[dict[str, Any]] = [
    {"type": "boolean", "name": "resolved", "description": "Was it resolved?"}]
"""The custom fields of the bench's agent: the pipeline's sessions and the SDK-call task's
request are of the same shape."""


def bench_transcript(number: int) -> list[dict[str, str]]:
    """The transcript the bench seeds for session `number` (see `seed_workspace`)."""
    return [{"role": "agent", "content": "Hello, how can I help?"},
            {"role": "user", "content": f"My order {number} arrived broken."}]
