"""The HTTP server: shared state, routing, the request handler, and the process entry points."""

from __future__ import annotations

import argparse
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from scheduler.dev.llm_stub.batches import BatchState, handle_batches, owns_path
from scheduler.dev.llm_stub.billing import PromptCache
from scheduler.dev.llm_stub.faults import (
    BEHAVIOURS,
    ConnectionFault,
    FaultConfig,
    faults_from_flags,
)
from scheduler.dev.llm_stub.messages import handle_count_tokens, handle_messages
from scheduler.dev.llm_stub.ratewindow import (
    RequestWindow,
    handle_rate_window,
    rate_limit_headers,
)
from scheduler.dev.llm_stub.wire import (
    STATUS_PHRASES,
    Answer,
    ApiError,
    encode_payload,
    error_payload,
    parse_body,
)

_LINGER_ZERO = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class BilledAnswer:
    """One answer the stand-in billed: when (``time.monotonic()``), for which model, its
    ``usage``, and whether it was a request of a Message Batch (the provider bills those at
    a discount; the price is the caller's table, not the stand-in's)."""

    at: float
    model: str
    usage: Mapping[str, int]
    batch: bool


class StubServer(ThreadingHTTPServer):
    """The HTTP server, holding the settings and the state shared by handler threads."""

    daemon_threads = True
    # socketserver's default backlog is 5: 32 worker threads opening their pooled connections
    # at once overflowed it, and a SYN-cookie handshake that then failed reset a connection
    # mid-request. The provider's servers take every connection; so does the stand-in.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], latency_ms: int, faults: FaultConfig) -> None:
        super().__init__(address, _Handler)
        self.latency_ms = latency_ms
        self.faults = faults
        # Messages requests (batch requests included) and count_tokens requests, apart, so a
        # test can tell how many calls of each kind a caller made.
        self.request_count = 0
        self.count_tokens_requests = 0
        # Every answer billed, in order: the stand-in's invoice.
        self.billed: list[BilledAnswer] = []
        self.prompt_cache = PromptCache()
        self.batch_state = BatchState()
        # Set by enable_rate_limit (``--rpm-limit``); None = no request limit.
        self.request_window: RequestWindow | None = None
        self._lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker, a timed-out call) is routine, not an
        error worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def next_request_number(self) -> int:
        """Count a Messages request; the number also seeds the error-rate draw."""
        with self._lock:
            self.request_count += 1
            return self.request_count

    def note_count_tokens_request(self) -> None:
        with self._lock:
            self.count_tokens_requests += 1

    def note_billed(self, model: str, usage: Mapping[str, int], batch: bool) -> None:
        with self._lock:
            self.billed.append(BilledAnswer(time.monotonic(), model, dict(usage), batch))


def make_server(
    host: str, port: int, latency_ms: int = 0, faults: FaultConfig | None = None
) -> StubServer:
    """Bind the stub (port 0 picks a free port: read it from ``server_address[1]``)."""
    return StubServer((host, port), latency_ms, faults or FaultConfig())


def enable_rate_limit(server: StubServer, limit: int, window_s: float = 60.0) -> None:
    server.request_window = RequestWindow(limit, window_s)


# --- routing ----------------------------------------------------------------------------------


def handle_faults(server: StubServer, method: str, raw: bytes) -> Answer:
    """``GET`` shows the faults, ``POST`` replaces them (the chaos driver lifts a burst)."""
    if method == "POST":
        try:
            server.faults = FaultConfig.from_json(parse_body(raw))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
    return 200, server.faults.as_json()


def route(
    server: StubServer, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Answer:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if (method, path) == ("GET", "/healthz"):
        return 200, {"ok": True}
    if (method, path) == ("POST", "/v1/messages"):
        return handle_messages(server, headers, raw)
    if (method, path) == ("POST", "/v1/messages/count_tokens"):
        return handle_count_tokens(server, headers, raw)
    if (method, path) == ("GET", "/_ratelimit"):
        return handle_rate_window(server.request_window)
    if path == "/_faults" and method in ("GET", "POST"):
        return handle_faults(server, method, raw)
    if owns_path(path):
        return handle_batches(server, method, path, headers, raw)
    raise ApiError(404, f"no route for {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the SDK's pooled connections alive; every answer sets Content-Length.
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes; with Nagle's algorithm the body waits
    # for the client's delayed ACK of the headers, adding ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: StubServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent on purpose: request lines and bodies must never reach logs."""

    def _dispatch(self, method: str) -> None:
        request_id = "req_" + secrets.token_hex(12)
        raw = self._read_body()
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            status, payload = route(self.server, method, self.path, headers, raw)
        except ApiError as error:
            status, payload = error.status, error_payload(error, request_id)
        except ConnectionFault as fault:
            self._break_connection(fault)
            return
        try:
            self._send_json(status, payload, request_id)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired during the latency sleep): nothing to answer.
            self.close_connection = True

    def _break_connection(self, fault: ConnectionFault) -> None:
        """No HTTP answer at all: wait out a hang, then reset the connection (RST, not FIN)."""
        if fault.behaviour == "hang":
            time.sleep(fault.hang_s)
        self.close_connection = True
        try:
            # Linger 0 makes close() send RST; the read buffer holds the socket open until
            # it is closed too, so both go now and the client sees a reset at once.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass  # the client already gave up on this connection

    def _read_body(self) -> bytes:
        # Reading the whole body, even for errors, keeps a kept-alive connection in step.
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass  # trailers end with an empty line
        return b"".join(chunks)

    def _send_json(self, status: int, payload: dict[str, Any], request_id: str) -> None:
        data, content_type = encode_payload(payload)
        self.send_response(status, STATUS_PHRASES.get(status))
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", request_id)
        window, retry_after_s = self.server.request_window, self.server.faults.retry_after_s
        for name, value in rate_limit_headers(window, retry_after_s, status).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


# --- process entry points ---------------------------------------------------------------------


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    latency_ms: int = 0,
    faults: FaultConfig | None = None,
    rpm_limit: int = 0,
    rl_window_s: float = 60.0,
) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket and return (exit code 0)."""
    server = make_server(host, port, latency_ms, faults)
    if rpm_limit:
        enable_rate_limit(server, rpm_limit, rl_window_s)
    stop = threading.Event()
    previous = _on_stop_signals(stop)
    # serve_forever runs in a thread: shutdown() from the main thread would deadlock otherwise.
    worker = threading.Thread(target=server.serve_forever, name="llm-stub", daemon=True)
    worker.start()
    print(
        f"llm-stub listening on http://{host}:{server.server_address[1]}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        worker.join()
        _restore_signals(previous)


SignalHandler = Any


def _on_stop_signals(stop: threading.Event) -> dict[int, SignalHandler]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals can only be handled on the main thread; the caller stops us then

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: dict[int, SignalHandler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-stub", description="A local stand-in for the Anthropic Messages API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests to fail")
    parser.add_argument("--error-status", type=int, default=529, help="status of those failures")
    parser.add_argument(
        "--fault", action="append", default=[], metavar="FAULT=RATE",
        help="fail this share of requests with FAULT (a status or " + ", ".join(sorted(BEHAVIOURS))
        + "); repeatable",
    )
    parser.add_argument(
        "--fail-session", action="append", default=[], metavar="ID=FAULT",
        help="always answer FAULT when the prompt holds session_id=ID; repeatable",
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry-after of 429s")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--rpm-limit", type=int, default=0,
                        help="at most N requests per sliding window (0 = no limit)")
    parser.add_argument("--rl-window-s", type=float, default=60.0,
                        help="the window of --rpm-limit, in seconds")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``python -m scheduler.dev.llm_stub``: the same server as ``backfill llm-stub``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = faults_from_flags(
            error_rate=args.error_rate, error_status=args.error_status,
            fail_sessions=args.fail_session, rates=args.fault,
            retry_after_s=args.retry_after, hang_s=args.hang_s,
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.host, args.port, args.latency_ms, faults, args.rpm_limit, args.rl_window_s)
