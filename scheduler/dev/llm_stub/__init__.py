"""A local stand-in for the Anthropic Messages API, so the real SDK path runs in tests and demos.

Only the standard library is used, so the stub starts anywhere the project's code does. It is a
development tool (``scheduler.dev``): no runtime path of the product imports it. Run it with
``backfill llm-stub`` or ``python -m scheduler.dev.llm_stub`` (same flags).

Modules
-------
The modules form no import cycle; each imports only those above it in this list:

- ``wire``: Anthropic-shaped errors, request checks, JSON / JSON Lines encoding;
- ``content``: the text of content blocks and the output schema (read by the bill, the
  answers and the faults alike);
- ``faults``: ``FaultConfig``, which request gets which fault;
- ``tokens``: the tokenizer (its rule is in its doc);
- ``billing``: the prompt blocks in cache order, the per-model cache minimums, the prompt
  cache, ``usage`` and the count of ``count_tokens``;
- ``transcript``: reading a transcript: turns, words with stems and numbers, cues;
- ``answers``: schema-fitting values (the rules below), the answer content;
- ``ratewindow``: the request limit of ``--rpm-limit``;
- ``messages``: ``/v1/messages`` and ``/v1/messages/count_tokens``, over a small ``Protocol``
  of the server state;
- ``batches``: the Message Batches endpoints (its own doc), over that ``Protocol``;
- ``server``: ``StubServer``, routing, the HTTP handler, ``serve`` / ``main``.

Endpoints
---------
- ``POST /v1/messages``: the Messages API (non-streaming).
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, N = exactly the input tokens
  (uncached + cache write + cache read) that ``/v1/messages`` bills for the same body.
- ``GET /healthz``: ``{"ok": true}``.
Anything else is a 404 ``not_found_error``. Every error body is Anthropic-shaped:
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.

Answers
-------
The answer is derived, deterministically, from the *transcript*: the text of every ``user``
message joined by newlines; where that text holds ``<transcript>…</transcript>`` sections, only
their inside counts (instructions around the transcript never steer the answer).

- A forced tool (``tool_choice`` ``{"type": "tool", "name": N}``, or ``{"type": "any"}`` = the
  first tool) gives one ``tool_use`` block whose ``input`` fits the tool's ``input_schema``,
  ``stop_reason: "tool_use"``.
- Else ``output_config.format`` of type ``json_schema`` gives one text block holding the JSON
  object, ``stop_reason: "end_turn"``.
- Else one text block with a one-sentence summary, ``stop_reason: "end_turn"``.
- Like the real API, a text answer longer than ``max_tokens`` tokens is cut to its first
  ``max_tokens`` tokens and ``stop_reason`` becomes ``"max_tokens"`` (the JSON then no longer
  parses).

Values that fit a JSON schema: a pure function of (transcript, schema), always valid.

*Reading the transcript.* Turns are ``role: text`` lines (an indented or unprefixed line
continues the turn before it); the user's turns are those of ``user``, ``customer``,
``caller``, ``human``, ``client``, ``visitor``. Words are compared by stem: lower case, a
plural ``s`` cut, then the first of ``ing``/``ed``/``e`` (each only if 3 letters remain), a
final doubled consonant halved (``bookings``, ``booked``, ``book`` → ``book``; no
synonyms). A field's words are the stems of its name's parts and its ``description`` (the
schema's, also when it sits on an ``anyOf`` wrapper), of 3 letters or more, common function
words and ``call``, ``user``, ``agent``, … left out. Cues are listed in ``answers`` and
matched word for word (``booked`` is an outcome, ``book`` a request). Numbers are digits
(``1,200``, ``42.5``) or the words zero–twelve. With
``h = int(sha256(transcript + property_name), 16)``:

- ``$ref`` (``#/$defs/…``) is followed; ``const`` is returned as is.
- ``enum``: the choice whose words (by stem) the user said most often; ties go to the one
  said most often by anyone, then to the one the user said last, then to choice order; if no
  choice is said, ``choices[h % len(choices)]``. ``null`` is never picked unless it is the
  only choice. A property named ``…sentiment`` (``user_sentiment``) takes, when it is a
  choice: ``Unknown`` if the user said fewer than 3 words, else ``Positive`` / ``Negative`` by
  the balance of cue words in the user's turns (thanks, great, perfect, … against angry,
  terrible, frustrated, complaint, …), ``Neutral`` when even.
- ``anyOf`` / ``oneOf`` / ``allOf`` and ``type`` lists: the first branch that is not ``null``.
- ``object``: every property listed in ``properties`` (so ``required`` and
  ``additionalProperties: false`` always hold); no type but ``properties`` means object.
- ``array``: ``max(1, minItems)`` items.
- ``boolean``: a property named ``successful`` or ``…_successful``: the balance of success
  cues (booked, confirmed, resolved, refunded, thank you, …) against failure cues (cancel,
  not interested, hang up, complaint, wrong number, …) over every turn. Any other: the
  balance of yes cues (yes, sure, correct, booked, confirmed, …) against no cues (no, not,
  never, cancel, any ``…n't``) in the user's turns that name one of the field's words or
  answer a turn that does. ``h % 2 == 0`` when the balance is even.
- ``number`` / ``integer``: the number nearest (in words) to one of the field's words, the
  earlier on a tie (``appointment_count``, "How many appointments…" takes the number next
  to "appointments"); else the first number; else ``h % 10``; clamped to ``minimum`` /
  ``maximum``; ``integer`` truncates.
- ``string``: a ``format`` (date-time, date, time, email, uuid, uri) gets a fixed sample; a name
  ending in ``summary`` gets the first 12 words of the first user turn (else of the first
  turn); any other name gets ``"<name>: "`` + the first 6 words of the first turn naming one
  of the field's words (else of the first user turn); then padded to ``minLength`` and cut to
  ``maxLength``.

Usage and prompt caching
------------------------
Tokens come from the stand-in's own tokenizer (``tokens``; no characters-per-token ratio). A
request is billed block by block, in cache order, each with a small fixed overhead:

1. ``tools``: each tool's name, description and ``input_schema`` (compact JSON), + 8;
2. the structured-output schema ``output_config.format.schema`` (compact JSON), + 40;
3. ``system`` (a string is one block): each block's text + 1, and + 3 once;
4. each message's content blocks (a string is one text block): a text block by its text, a
   ``tool_result`` by its content's text, any other block by its compact JSON; + 1 each,
   and + 3 per message;

then + 4 for the request itself, never part of a cached prefix. Other settings
(``tool_choice``, ``max_tokens``, …) are not counted.

The cacheable prefix runs through the last block carrying ``cache_control`` (a top-level
``cache_control`` marks the last block). It is cached only when it reaches the model's
minimum, the provider's rule (``MIN_CACHEABLE_PREFIX_TOKENS``, ``min_cacheable_tokens``):
4,096 tokens for Claude Haiku 4.5, Opus 4.5 and Opus 4.6; 2,048 for Sonnet 4.6 and Haiku 3.5;
1,024 for Sonnet 4.5, Sonnet 4, Opus 4.1, Opus 4 and any model not in the table; ids match
with or without a date suffix or ``-latest``. Below the minimum the request succeeds, nothing
is cached or read and the prefix is plain input. At or above it, the prefix is a cache read
if the same model and prefix were seen in the last 300 s (a hit refreshes it, as the real
cache does), else a cache write.

``usage``: ``input_tokens`` = the input not written to or read from the cache,
``cache_creation_input_tokens``, ``cache_read_input_tokens``, and ``output_tokens`` = the
tokens of the answer's text (a tool call: its name and input JSON). ``count_tokens`` answers
the sum of the three input figures without touching the cache. ``StubServer.request_count``
counts Messages requests (batch requests included), ``count_tokens_requests`` the
``count_tokens`` requests, and ``StubServer.billed`` lists every answer billed (time, model,
``usage``, batch or not): the stand-in's invoice, which tests price with the product's table.

Faults (``FaultConfig``)
------------------------
A fault is named by an HTTP status (``"429"``, ``"529"``, ``"500"``, ``"401"``, ``"402"``, …),
answered as that Anthropic error, or by a behaviour:

- ``reset``: the connection is reset (TCP RST) before any answer;
- ``hang``: no answer for ``hang_s`` seconds (past the client's timeout), then the connection
  closes;
- ``malformed_json``: a 200 whose text is cut-off JSON (``stop_reason: "end_turn"``);
- ``refusal``: a 200 with ``stop_reason: "refusal"``;
- ``max_tokens``: a 200 whose text is cut at half (``stop_reason: "max_tokens"``).

Which request gets which fault:

- ``fail_session_ids``: ``{session_id: fault}``; a request whose message text holds
  ``session_id=<ID>`` (not followed by a word character or ``-``) always gets that fault.
- ``rates``: ``{fault: share}``, and ``error_rate`` / ``error_status`` (one more entry): one
  draw per request, ``sha256(body + request_number)`` mapped to [0, 1), walks the shares in
  order (``error_status`` first), so a given sequence of requests fails the same way on every
  run. The shares add up to at most 1.
- ``x-api-key: invalid`` gives 401; a missing key gives 401 too. 429 answers carry
  ``retry-after: <retry_after_s>`` (1 by default).

The faults can be changed while the stub runs (a fault burst, then lifting it):
``GET /_faults`` answers the current ``FaultConfig`` as JSON, ``POST /_faults`` with such a
JSON object replaces it (unknown keys or faults are a 400). These admin routes take no key: the
stub is a local test tool and binds to 127.0.0.1 by default.

Request rate limit
------------------
``--rpm-limit R`` (``enable_rate_limit``) admits at most R Messages requests in any sliding
window of ``--rl-window-s`` seconds (60 by default); a request over it is a 429
``rate_limit_error`` with ``retry-after`` (seconds until a slot frees). Every answer then
carries ``anthropic-ratelimit-requests-limit``, ``-remaining`` and ``-reset`` (RFC 3339).
``GET /_ratelimit`` answers the limit and the monotonic times of admitted and rejected
requests, so a test can check every window.

The handler never logs: request bodies hold transcripts, which are personal data.
"""

from scheduler.dev.llm_stub.answers import answer_content, derive, faulty_content
from scheduler.dev.llm_stub.billing import (
    DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS,
    MIN_CACHEABLE_PREFIX_TOKENS,
    count_input_tokens,
    min_cacheable_tokens,
    model_family,
)
from scheduler.dev.llm_stub.faults import (
    ConnectionFault,
    FaultConfig,
    faults_from_flags,
    pick_fault,
    raise_status_fault,
)
from scheduler.dev.llm_stub.messages import build_message, handle_count_tokens, handle_messages
from scheduler.dev.llm_stub.ratewindow import RequestWindow
from scheduler.dev.llm_stub.server import (
    BilledAnswer,
    StubServer,
    enable_rate_limit,
    main,
    make_server,
    route,
    serve,
)
from scheduler.dev.llm_stub.tokens import count_tokens, tokenize
from scheduler.dev.llm_stub.transcript import transcript_of
from scheduler.dev.llm_stub.wire import ApiError

__all__ = [
    "DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS",
    "BilledAnswer",
    "MIN_CACHEABLE_PREFIX_TOKENS",
    "ApiError",
    "ConnectionFault",
    "FaultConfig",
    "RequestWindow",
    "StubServer",
    "answer_content",
    "build_message",
    "count_input_tokens",
    "count_tokens",
    "derive",
    "enable_rate_limit",
    "faults_from_flags",
    "faulty_content",
    "handle_count_tokens",
    "handle_messages",
    "main",
    "make_server",
    "min_cacheable_tokens",
    "model_family",
    "pick_fault",
    "raise_status_fault",
    "route",
    "serve",
    "tokenize",
    "transcript_of",
]
