"""Import agents, calls and chats from JSONL (the format of `examples/sessions.jsonl`).

Two steps, so a bad file never half-imports: `parse_import_file` validates every line and
collects every problem before anything touches the database; `import_batch` then upserts the
whole batch in one transaction. Re-importing the same file changes nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.db import Database
from shared.errors import InvalidImport
from shared.models import AgentVersion, SessionRecord, Workspace
from shared.vocabulary import AgentKind, CallStatus, CallType, ChatStatus, Direction, Sentiment

MAX_ID_LENGTH = 128  # the String(128) key columns
INT32_MAX = 2**31 - 1  # Integer columns (versions)
INT64_MAX = 2**63 - 1  # BigInteger columns (timestamps, durations)
CHUNK_ROWS = 1000  # rows per statement: few round trips, bounded statement size
OBJECT_TYPES = ("agent", "call", "chat")
PRESET_NAMES = {
    "voice": ("call_summary", "call_successful", "user_sentiment"),
    "chat": ("chat_summary", "chat_successful", "user_sentiment"),
}

# --------------------------------------------------------------------------------------------
# Line shapes (pydantic). Strict: a timestamp "123" or a version true is an error, not coerced.
# --------------------------------------------------------------------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_not_blank)]
Name = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
Version = Annotated[int, Field(ge=0, le=INT32_MAX)]
EpochMs = Annotated[int, Field(ge=0, le=INT64_MAX)]
JsonObject = dict[str, Any]


class _Line(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class AnalysisFieldIn(_Line):
    """One entry of `post_call_analysis_data` / `post_chat_analysis_data`."""

    type: Literal["system-presets", "string", "enum", "boolean", "number"]
    name: Name
    description: str | None = None
    choices: list[str] | None = None
    examples: list[str] | None = None
    required: bool | None = None
    conditional_prompt: str | None = None

    @model_validator(mode="after")
    def _enum_has_choices(self) -> AnalysisFieldIn:
        if self.type == "enum" and not self.choices:
            raise ValueError(f"enum field '{self.name}' needs a non-empty choices list")
        return self


class AgentIn(_Line):
    agent_id: Id
    workspace_id: Id
    version: Version
    is_published: bool
    agent_name: str | None = None
    kind: AgentKind
    post_call_analysis_model: str | None = None
    post_chat_analysis_model: str | None = None
    post_call_analysis_data: list[AnalysisFieldIn] | None = None
    post_chat_analysis_data: list[AnalysisFieldIn] | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        # Older exports carry no `kind`; the Retell key names say which kind the agent is.
        if isinstance(data, dict) and "kind" not in data:
            chat_keys = ("post_chat_analysis_data", "post_chat_analysis_model")
            return {**data, "kind": "chat" if any(k in data for k in chat_keys) else "voice"}
        return data

    @property
    def data_key(self) -> str:
        """The key holding the fields: the kind's own key, else the other one if only it is set."""
        own, other = ("post_chat_analysis_data", "post_call_analysis_data")
        if self.kind == "voice":
            own, other = other, own
        return other if getattr(self, own) is None and getattr(self, other) is not None else own

    @property
    def analysis_model(self) -> str | None:
        if self.kind == "chat":
            return self.post_chat_analysis_model or self.post_call_analysis_model
        return self.post_call_analysis_model or self.post_chat_analysis_model

    @model_validator(mode="after")
    def _fields_are_consistent(self) -> AgentIn:
        fields: list[AnalysisFieldIn] = getattr(self, self.data_key) or []
        presets = PRESET_NAMES[self.kind]
        seen: set[str] = set()
        for index, item in enumerate(fields):
            where = f"{self.data_key}[{index}]"
            if item.type == "system-presets" and item.name not in presets:
                raise ValueError(f"{where}: system-presets name '{item.name}' is not one of "
                                 f"{', '.join(presets)} (a {self.kind} agent)")
            if item.name in seen:
                raise ValueError(f"{where}: duplicate field name '{item.name}'")
            seen.add(item.name)
        return self


class TurnIn(_Line):
    role: Annotated[str, Field(min_length=1, max_length=32)]
    content: str


class TransferIn(_Line):
    from_agent_id: Id
    to_agent_id: Id
    post_call_analysis_setting: Literal["only_destination_agent", "both_agents"]
    at_ms: EpochMs | None = None


class CallAnalysisIn(_Line):
    call_summary: str | None = None
    call_successful: bool | None = None
    user_sentiment: Sentiment | None = None
    in_voicemail: bool | None = None
    custom_analysis_data: JsonObject | None = None


class ChatAnalysisIn(_Line):
    chat_summary: str | None = None
    chat_successful: bool | None = None
    user_sentiment: Sentiment | None = None
    custom_analysis_data: JsonObject | None = None


class _SessionIn(_Line):
    workspace_id: Id
    agent_id: Id
    agent_version: Version | None = None
    start_timestamp: EpochMs
    end_timestamp: EpochMs | None = None
    duration_ms: EpochMs | None = None
    disconnection_reason: str | None = None
    transcript_object: list[TurnIn] | None = None
    transcript: str | None = None
    metadata: JsonObject | None = None
    agent_transfers: list[TransferIn] | None = None

    def turns(self) -> list[dict[str, str]]:
        """`transcript_object` wins; a plain `transcript` string is split into turns."""
        if self.transcript_object is not None:
            # Retell turns also carry word timings; only role and content are kept.
            return [{"role": t.role, "content": t.content} for t in self.transcript_object]
        return transcript_from_text(self.transcript or "")


class CallIn(_SessionIn):
    call_id: Id
    call_type: CallType | None = None
    call_status: CallStatus
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    batch_call_id: str | None = None
    retell_llm_dynamic_variables: JsonObject | None = None
    call_analysis: CallAnalysisIn | None = None


class ChatIn(_SessionIn):
    chat_id: Id
    chat_status: ChatStatus
    dynamic_variables: JsonObject | None = None
    retell_llm_dynamic_variables: JsonObject | None = None
    chat_analysis: ChatAnalysisIn | None = None


# --------------------------------------------------------------------------------------------
# Pydantic errors -> short reasons that name the field.
# --------------------------------------------------------------------------------------------

_INT_HINTS = {
    "version": "an integer ≥ 0",
    "agent_version": "an integer ≥ 0 or null",
    "start_timestamp": "an integer (epoch ms)",
    "end_timestamp": "an integer (epoch ms) or null",
    "duration_ms": "an integer ≥ 0 (ms) or null",
    "at_ms": "an integer ≥ 0 (ms) or null",
}
_ID_FIELDS = {"agent_id", "workspace_id", "call_id", "chat_id", "from_agent_id", "to_agent_id"}
_SHAPES = {
    "transcript_object": "a list of {role, content}",
    "agent_transfers": "a list of {from_agent_id, to_agent_id, post_call_analysis_setting}",
    "post_call_analysis_data": "a list of field objects {type, name, description, …}",
    "post_chat_analysis_data": "a list of field objects {type, name, description, …}",
}
_INT_ERRORS = {"int_type", "int_parsing", "int_from_float", "greater_than_equal"}
_CONTAINER_ERRORS = {"list_type", "model_type", "model_attributes_type", "dict_type"}


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _container_reason(loc: Sequence[int | str], error_type: str) -> str:
    root = str(loc[0]) if loc else ""
    if root in _SHAPES and len(loc) <= 2:
        return f"{root} must be {_SHAPES[root]}"
    return f"{_where(loc)} must be {'a list' if error_type == 'list_type' else 'an object'}"


def _value_reason(where: str, message: str) -> str:
    message = message.removeprefix("Value error, ")
    if not where:
        return message
    return f"{where} {message}" if message.startswith("must ") else f"{where}: {message}"


def reason_for(error: ErrorDetails) -> str:
    """One short human reason for one pydantic error, naming the field."""
    loc, kind = error["loc"], error["type"]
    where, name = _where(loc), str(loc[-1]) if loc else ""
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"missing {where}"
    if kind in _INT_ERRORS:
        return f"{where} must be {_INT_HINTS.get(name, 'an integer')}"
    if kind == "less_than_equal":
        return f"{where} is too large (at most {ctx.get('le')})"
    if kind == "string_too_long":
        return (f"{where} is too long ({len(error['input'])} characters, "
                f"at most {ctx.get('max_length')})")
    if kind in ("string_type", "string_too_short"):
        empty = kind == "string_too_short" or name in _ID_FIELDS
        return f"{where} must be {'a non-empty string' if empty else 'a string'}"
    if kind == "bool_type":
        return f"{where} must be true or false"
    if kind == "literal_error":
        return f"{where} {_short(error['input'])} is not one of {ctx.get('expected')}"
    if kind in _CONTAINER_ERRORS:
        return _container_reason(loc, kind)
    if kind == "value_error":
        return _value_reason(where, error["msg"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _reasons(exc: ValidationError) -> list[str]:
    reasons: list[str] = []
    for error in exc.errors(include_url=False):
        reason = reason_for(error)
        if reason not in reasons:
            reasons.append(reason)
    return reasons


# --------------------------------------------------------------------------------------------
# Values that JSON allows but Postgres cannot store.
# --------------------------------------------------------------------------------------------


def _unstorable(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an invalid \\u escape (lone surrogate)"
    return None


def _unstorable_strings(value: Any, where: str = "") -> Iterator[str]:
    """Postgres text and jsonb refuse NUL and lone surrogates: refuse them here, with a path."""
    if isinstance(value, str):
        problem = _unstorable(value)
        if problem:
            yield f"{where or 'a value'} {problem}"
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{where}.{key}" if where else str(key)
            problem = _unstorable(key)
            if problem:
                yield f"a key in {where or 'the object'} {problem}"
            yield from _unstorable_strings(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable_strings(item, f"{where}[{index}]")


def _may_hold_unstorable(text: str) -> bool:
    # JSON can only produce NUL or a surrogate through a \u escape: skip the walk otherwise.
    lowered = text.lower()
    return "\\u0000" in lowered or "\\ud" in lowered


# --------------------------------------------------------------------------------------------
# Plain transcript strings.
# --------------------------------------------------------------------------------------------

_SPEAKER = re.compile(r"^\s*(agent|user)\s*:\s?(.*)$", re.IGNORECASE)


def transcript_from_text(text: str) -> list[dict[str, str]]:
    """`Agent: …` / `User: …` lines become turns (other lines continue the previous turn);
    text without any such line is one user turn."""
    lines = text.splitlines()
    if not any(_SPEAKER.match(line) for line in lines):
        return [{"role": "user", "content": text.strip()}] if text.strip() else []
    turns: list[dict[str, str]] = []
    for line in lines:
        match = _SPEAKER.match(line)
        if match:
            turns.append({"role": match[1].lower(), "content": match[2].strip()})
        elif turns:
            turns[-1]["content"] = f"{turns[-1]['content']}\n{line}".strip()
        elif line.strip():  # text before the first speaker: the caller, by default
            turns.append({"role": "user", "content": line.strip()})
    return turns


# --------------------------------------------------------------------------------------------
# Lines -> table rows.
# --------------------------------------------------------------------------------------------


def _agent_row(agent: AgentIn, raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "workspace_id": agent.workspace_id,
        "agent_id": agent.agent_id,
        "version": agent.version,
        "is_published": agent.is_published,
        "agent_name": agent.agent_name,
        "kind": agent.kind,
        "analysis_model": agent.analysis_model,
        # Stored as given: the worker reads keys (conditional_prompt, …) this file never names.
        "analysis_data": raw.get(agent.data_key) or [],
    }


def _session_row(line: _SessionIn, raw: Mapping[str, Any]) -> dict[str, Any]:
    transfers = raw.get("agent_transfers") or []
    return {
        "workspace_id": line.workspace_id,
        "agent_id": line.agent_id,
        "agent_version": line.agent_version,
        "start_timestamp": line.start_timestamp,
        "end_timestamp": line.end_timestamp,
        "duration_ms": line.duration_ms,
        "disconnection_reason": line.disconnection_reason,
        "transcript": line.turns(),
        "metadata": line.metadata or {},
        "agent_transfers": transfers,
        "transfer_agent_ids": [t.to_agent_id for t in line.agent_transfers or []],
    }


def _call_row(call: CallIn, raw: Mapping[str, Any]) -> dict[str, Any]:
    analysis = call.call_analysis or CallAnalysisIn()
    return {
        **_session_row(call, raw),
        "session_id": call.call_id,
        "kind": "call",
        "status": call.call_status,
        "call_type": call.call_type,
        "direction": call.direction,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "batch_call_id": call.batch_call_id,
        "dynamic_variables": call.retell_llm_dynamic_variables or {},
        "summary": analysis.call_summary,
        "successful": analysis.call_successful,
        "user_sentiment": analysis.user_sentiment,
        "in_voicemail": analysis.in_voicemail,
        "custom_analysis_data": analysis.custom_analysis_data or {},
    }


def _chat_row(chat: ChatIn, raw: Mapping[str, Any]) -> dict[str, Any]:
    analysis = chat.chat_analysis or ChatAnalysisIn()
    variables = chat.dynamic_variables
    return {
        **_session_row(chat, raw),
        "session_id": chat.chat_id,
        "kind": "chat",
        "status": chat.chat_status,
        "call_type": None,
        "direction": None,
        "from_number": None,
        "to_number": None,
        "batch_call_id": None,
        "dynamic_variables": (variables if variables is not None
                              else chat.retell_llm_dynamic_variables) or {},
        "summary": analysis.chat_summary,
        "successful": analysis.chat_successful,
        "user_sentiment": analysis.user_sentiment,
        "in_voicemail": None,
        "custom_analysis_data": analysis.custom_analysis_data or {},
    }


# --------------------------------------------------------------------------------------------
# Parsing a file.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportBatch:
    """A fully validated file, as table rows (keys are the tables' column keys)."""

    workspace_ids: tuple[str, ...]
    agent_versions: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    # session_id -> line number, so a conflict found in the database can name its line.
    session_lines: dict[str, int]

    @property
    def calls(self) -> int:
        return sum(1 for row in self.sessions if row["kind"] == "call")

    @property
    def chats(self) -> int:
        return len(self.sessions) - self.calls


@dataclass
class _Collector:
    problems: list[tuple[int, str]] = field(default_factory=list)
    workspaces: dict[str, None] = field(default_factory=dict)  # ordered set
    agents: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    agent_lines: dict[tuple[str, str, int], int] = field(default_factory=dict)
    session_lines: dict[str, int] = field(default_factory=dict)

    def add(self, number: int, raw_line: bytes) -> None:
        text = self._decode(number, raw_line)
        if text is None or not text.strip():
            return
        obj = self._load(number, text)
        if obj is None:
            return
        problems = list(_unstorable_strings(obj)) if _may_hold_unstorable(text) else []
        row = self._validate(obj, problems)
        self.problems.extend((number, reason) for reason in problems)
        if row is not None and not problems:
            self._keep(number, obj["object"], row)

    def _decode(self, number: int, raw_line: bytes) -> str | None:
        if number == 1:
            raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")  # a BOM from Windows editors
        try:
            return raw_line.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.append((number, f"not valid UTF-8 (byte 0x{raw_line[exc.start]:02x} "
                                          f"at offset {exc.start})"))
            return None

    def _load(self, number: int, text: str) -> dict[str, Any] | None:
        try:
            obj = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            self.problems.append((number, f"not valid JSON: {exc.msg} (column {exc.colno})"))
            return None
        except (ValueError, RecursionError) as exc:
            self.problems.append((number, f"not valid JSON: {exc}"))
            return None
        if not isinstance(obj, dict):
            self.problems.append((number, f"expected a JSON object, got {type(obj).__name__}"))
            return None
        kind = obj.get("object")
        if kind not in OBJECT_TYPES:
            reason = ("missing object (expected agent, call or chat)" if kind is None else
                      f"unknown object type {_short(kind)} (expected agent, call or chat)")
            self.problems.append((number, reason))
            return None
        return obj

    @staticmethod
    def _validate(obj: dict[str, Any], problems: list[str]) -> dict[str, Any] | None:
        try:
            if obj["object"] == "agent":
                return _agent_row(AgentIn.model_validate(obj), obj)
            if obj["object"] == "call":
                return _call_row(CallIn.model_validate(obj), obj)
            return _chat_row(ChatIn.model_validate(obj), obj)
        except ValidationError as exc:
            problems.extend(_reasons(exc))
            return None

    def _keep(self, number: int, kind: str, row: dict[str, Any]) -> None:
        if kind == "agent":
            key = (row["workspace_id"], row["agent_id"], row["version"])
            first = self.agent_lines.setdefault(key, number)
            if first != number:
                self.problems.append((number, f"duplicate agent version {key[1]!r} v{key[2]} in "
                                              f"workspace {key[0]!r} (also on line {first})"))
                return
            self.agents.append(row)
        else:
            first = self.session_lines.setdefault(row["session_id"], number)
            if first != number:
                self.problems.append((number, f"duplicate {kind}_id {row['session_id']!r} "
                                              f"(also on line {first})"))
                return
            self.sessions.append(row)
        self.workspaces.setdefault(row["workspace_id"], None)

    def finish(self) -> ImportBatch:
        if self.problems:
            raise InvalidImport(self.problems)
        if not self.agents and not self.sessions:
            raise InvalidImport([(0, "the file holds no agent, call or chat objects")])
        return ImportBatch(tuple(self.workspaces), self.agents, self.sessions,
                           self.session_lines)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(literal: str) -> float:
    # 1e400 parses as inf, which jsonb cannot store: refuse it here rather than in the INSERT.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal} is out of range")
    return value


def parse_lines(lines: Iterable[bytes]) -> ImportBatch:
    """Validate every line (1-based numbers) and raise `InvalidImport` with all problems."""
    collector = _Collector()
    for number, raw_line in enumerate(lines, start=1):
        collector.add(number, raw_line)
    return collector.finish()


def parse_import_file(path: Path) -> ImportBatch:
    """Read and validate a UTF-8 JSONL import file; nothing is imported if any line is bad."""
    try:
        with Path(path).open("rb") as handle:  # streamed: files of 200k sessions are large
            return parse_lines(handle)
    except OSError as exc:
        raise InvalidImport([(0, f"cannot read {path}: {exc.strerror or exc}")]) from exc


# --------------------------------------------------------------------------------------------
# Writing a batch.
# --------------------------------------------------------------------------------------------


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, inserted: int, updated: int, total: int) -> None:
        self.inserted += inserted
        self.updated += updated
        self.unchanged += total - inserted - updated


@dataclass
class ImportSummary:
    workspaces: UpsertCounts = field(default_factory=UpsertCounts)
    agent_versions: UpsertCounts = field(default_factory=UpsertCounts)
    calls: UpsertCounts = field(default_factory=UpsertCounts)
    chats: UpsertCounts = field(default_factory=UpsertCounts)

    @property
    def changed(self) -> bool:
        parts = (self.workspaces, self.agent_versions, self.calls, self.chats)
        return any(part.inserted or part.updated for part in parts)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "workspaces": vars(self.workspaces).copy(),
            "agent_versions": vars(self.agent_versions).copy(),
            "calls": vars(self.calls).copy(),
            "chats": vars(self.chats).copy(),
        }


_AGENTS: Table = AgentVersion.__table__  # type: ignore[assignment]
_SESSIONS: Table = SessionRecord.__table__  # type: ignore[assignment]
_WORKSPACES: Table = Workspace.__table__  # type: ignore[assignment]
_AGENT_KEY = ("workspace_id", "agent_id", "version")
_AGENT_COLUMNS = ("is_published", "agent_name", "kind", "analysis_model", "analysis_data")
# The analysis a session came with. Once a backfill has written the current analysis
# (analysis_run_id set), re-importing the original export must not roll it back to the old
# values: the import only refreshes these while the session has never been re-analysed.
_ANALYSIS_COLUMNS = ("summary", "successful", "user_sentiment", "in_voicemail",
                     "custom_analysis_data")
# Never written from the file: the provenance of the current analysis, and import time.
_PROVENANCE_COLUMNS = ("analysis_run_id", "analysis_started_at", "imported_at")
_SESSION_COLUMNS = tuple(
    c.name for c in _SESSIONS.c
    if c.name not in ("session_id", *_ANALYSIS_COLUMNS, *_PROVENANCE_COLUMNS)
)
# xmax is 0 on a freshly inserted row version and set on one that ON CONFLICT updated.
_WAS_INSERTED = literal_column("xmax = 0", Boolean).label("inserted")


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), CHUNK_ROWS):
        yield list(rows[start:start + CHUNK_ROWS])


def _records(table: Table, columns: Sequence[str], chunk: list[dict[str, Any]]) -> Select[Any]:
    """The chunk as ONE jsonb parameter that Postgres expands into typed rows of `table`.

    Measured on 20k sessions: `insert().values(list)` spends ~12 s compiling and binding 500k
    parameters, executemany ("insertmanyvalues") ~6 s, this ~0.8 s. The row dicts are keyed by
    column name, so `jsonb_populate_recordset` maps and casts every column (jsonb, text[],
    bigint) by name; the validation before guarantees every value fits its column.
    """
    rows = func.jsonb_populate_recordset(
        literal_column(f"NULL::{table.name}"), bindparam("rows", chunk, type_=JSONB),
    ).table_valued(*columns).alias("incoming")
    return select(*(rows.c[name] for name in columns))


def _differs(table: Table, excluded: Any, columns: Sequence[str]) -> ColumnElement[bool]:
    current = tuple_(*(table.c[name] for name in columns))
    return current.is_distinct_from(tuple_(*(excluded[name] for name in columns)))


def _upsert_workspaces(conn: Connection, ids: Sequence[str], counts: UpsertCounts) -> None:
    rows = [{"id": workspace_id} for workspace_id in ids]
    for chunk in _chunks(rows):
        stmt = pg_insert(_WORKSPACES).values(chunk).on_conflict_do_nothing(
            index_elements=["id"]).returning(_WORKSPACES.c.id)
        counts.add(len(conn.execute(stmt).all()), 0, len(chunk))


def _agent_upsert(chunk: list[dict[str, Any]]) -> Any:
    columns = (*_AGENT_KEY, *_AGENT_COLUMNS)
    stmt = pg_insert(_AGENTS).from_select(columns, _records(_AGENTS, columns, chunk))
    changes: dict[str, Any] = {name: stmt.excluded[name] for name in _AGENT_COLUMNS}
    changes["updated_at"] = func.now()  # only when something changed (the WHERE below)
    return stmt.on_conflict_do_update(
        index_elements=list(_AGENT_KEY),
        set_=changes,
        where=_differs(_AGENTS, stmt.excluded, _AGENT_COLUMNS),
    ).returning(_WAS_INSERTED)


def _upsert_agents(conn: Connection, rows: Sequence[dict[str, Any]],
                   counts: UpsertCounts) -> None:
    for chunk in _chunks(rows):
        flags = conn.execute(_agent_upsert(chunk)).scalars().all()
        inserted = sum(1 for flag in flags if flag)
        counts.add(inserted, len(flags) - inserted, len(chunk))


def _session_upsert(chunk: list[dict[str, Any]]) -> Any:
    columns = ("session_id", *_SESSION_COLUMNS, *_ANALYSIS_COLUMNS)
    stmt = pg_insert(_SESSIONS).from_select(columns, _records(_SESSIONS, columns, chunk))
    never_analysed = _SESSIONS.c.analysis_run_id.is_(None)
    changes: dict[str, Any] = {name: stmt.excluded[name] for name in _SESSION_COLUMNS}
    for name in _ANALYSIS_COLUMNS:
        changes[name] = case((never_analysed, stmt.excluded[name]), else_=_SESSIONS.c[name])
    changes["imported_at"] = func.now()  # only when something changed (the WHERE below)
    where = and_(
        # Belt and braces against a concurrent import: never move a session across workspaces.
        _SESSIONS.c.workspace_id == stmt.excluded.workspace_id,
        _SESSIONS.c.kind == stmt.excluded.kind,
        or_(_differs(_SESSIONS, stmt.excluded, _SESSION_COLUMNS),
            and_(never_analysed, _differs(_SESSIONS, stmt.excluded, _ANALYSIS_COLUMNS))),
    )
    return stmt.on_conflict_do_update(
        index_elements=["session_id"], set_=changes, where=where,
    ).returning(_SESSIONS.c.kind, _WAS_INSERTED)


def _upsert_sessions(conn: Connection, rows: Sequence[dict[str, Any]],
                     summary: ImportSummary) -> None:
    for chunk in _chunks(rows):
        returned = conn.execute(_session_upsert(chunk)).all()
        for kind, counts in (("call", summary.calls), ("chat", summary.chats)):
            total = sum(1 for row in chunk if row["kind"] == kind)
            flags = [inserted for row_kind, inserted in returned if row_kind == kind]
            inserted = sum(1 for flag in flags if flag)
            counts.add(inserted, len(flags) - inserted, total)


def _identity_conflicts(conn: Connection, batch: ImportBatch) -> list[tuple[int, str]]:
    """Sessions already stored under another workspace or kind. Session ids are global, and
    letting a file re-home a session would hand one workspace's history to another."""
    problems: list[tuple[int, str]] = []
    for chunk in _chunks(batch.sessions):
        wanted = {row["session_id"]: row for row in chunk}
        ids = bindparam("ids", list(wanted), type_=ARRAY(Text))
        existing = conn.execute(
            select(_SESSIONS.c.session_id, _SESSIONS.c.workspace_id, _SESSIONS.c.kind)
            .where(_SESSIONS.c.session_id == any_(ids))
        ).all()
        for session_id, workspace_id, kind in existing:
            row = wanted[session_id]
            if (workspace_id, kind) != (row["workspace_id"], row["kind"]):
                problems.append((batch.session_lines.get(session_id, 0),
                                 f"{row['kind']}_id {session_id!r} already exists as a {kind} "
                                 f"of workspace {workspace_id!r}"))
    return sorted(problems)


def import_batch(db: Database, batch: ImportBatch) -> ImportSummary:
    """Upsert the batch in one transaction; an identical re-import reports only "unchanged".

    Raises `InvalidImport` (and writes nothing) if a session id already belongs to another
    workspace or kind.
    """
    summary = ImportSummary()
    with db.transaction() as conn:
        conflicts = _identity_conflicts(conn, batch)
        if conflicts:
            raise InvalidImport(conflicts)
        _upsert_workspaces(conn, batch.workspace_ids, summary.workspaces)
        _upsert_agents(conn, batch.agent_versions, summary.agent_versions)
        _upsert_sessions(conn, batch.sessions, summary)
    return summary


__all__ = [
    "CHUNK_ROWS", "ImportBatch", "ImportSummary", "UpsertCounts", "import_batch",
    "parse_import_file", "parse_lines", "reason_for", "transcript_from_text",
]
