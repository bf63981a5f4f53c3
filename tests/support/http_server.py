"""A real HTTP server on loopback with scripted behaviour, for HTTP sink tests.

A small ASGI app served by uvicorn (h11) in a background thread, on a free
port. Tests script what it answers and read back what it received:

- ``script(*replies, path=None)`` queues replies, consumed in order (per path
  when ``path`` is given, else for any path); when the queue is empty the
  ``responder`` callable (if set) decides, else ``default`` answers.
- :class:`Reply` covers status sequences, ``Retry-After`` headers, slow
  answers (``delay``) and dropped connections (``drop``: the TCP connection is
  aborted without a response).
- ``requests`` records every request (headers with lower-case names, the
  body gunzipped when it was sent gzip-encoded) for assertions.
- Built with ``start=False`` (or ``ScriptedHttpServer(port=...)`` and
  ``start()`` later) it gives "connection refused until the server starts".

Waiting helpers poll a condition with a deadline; they never sleep a fixed time.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False

    def encoded(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        headers = [(k.lower().encode(), str(v).encode()) for k, v in self.headers.items()]
        if isinstance(self.body, bytes):
            body = self.body
        elif isinstance(self.body, str):
            body = self.body.encode()
        else:
            body = orjson.dumps(self.body)
            headers.append((b"content-type", b"application/json"))
        return body, headers


@dataclass
class RecordedRequest:
    """A request as the server saw it."""

    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    body: bytes
    received_at: float
    status: int = 0
    """The status the server answered with (0 while pending, -1 when the connection was dropped)."""

    def json(self) -> Any:
        return orjson.loads(self.body)

    def ndjson(self) -> list[Any]:
        return [orjson.loads(line) for line in self.body.splitlines() if line.strip()]

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


Responder = Callable[[RecordedRequest], Reply | None]


class ScriptedHttpServer:
    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port()
        self.default = Reply()
        self.responder: Responder | None = None
        self.requests: list[RecordedRequest] = []
        self.dropped = 0
        self._lock = threading.Lock()
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0

    # ----------------------------------------------------------------- control

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> ScriptedHttpServer:
        config = uvicorn.Config(
            self._app,
            host=self.host,
            port=self.port,
            http="h11",
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"http-server:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test HTTP server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> ScriptedHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply, path: str | None = None) -> None:
        """Queue replies (answered in order), for one path or for any path."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(replies)

    def pending(self, path: str | None = None) -> int:
        with self._lock:
            return len(self._scripts.get(path, ()))

    def received(self, path: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def documents(self, path: str | None = None, *, accepted_only: bool = True) -> list[Any]:
        """Documents received (by default from 2xx answers only); JSON arrays and NDJSON flattened."""
        out: list[Any] = []
        for request in self.received(path):
            if accepted_only and not 200 <= request.status < 300:
                continue
            if request.header("content-type") == "application/x-ndjson":
                out.extend(request.ndjson())
            else:
                value = request.json() if request.body else None
                out.extend(value if isinstance(value, list) else [value])
        return out

    async def until(
        self, predicate: Callable[[], bool], within: float = 10.0, what: str = "condition"
    ) -> None:
        """Wait (without blocking the caller's loop) until ``predicate()`` holds; fail after ``within``s."""
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}")
            await asyncio.sleep(0.005)

    # ---------------------------------------------------------------- serving

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            for key in (request.path, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        if self.responder is not None:
            reply = self.responder(request)
            if reply is not None:
                return reply
        return self.default

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = await self._record(scope, receive)
        reply = self._next_reply(request)
        request.status = -1 if reply.drop else reply.status
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                self._drop(scope)
                return
            body, headers = reply.encoded()
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _record(self, scope: dict[str, Any], receive: Any) -> RecordedRequest:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        body = gzip.decompress(raw) if headers.get("content-encoding") == "gzip" and raw else raw
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            raw_path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            raw_body=raw,
            body=body,
            received_at=time.monotonic(),
        )
        with self._lock:
            self.requests.append(request)
        return request

    def _drop(self, scope: dict[str, Any]) -> None:
        """Abort the TCP connection this request came on (the client sees a reset, no response)."""
        assert self._server is not None
        client = tuple(scope.get("client") or ())
        for connection in list(self._server.server_state.connections):
            if tuple(getattr(connection, "client", ()) or ()) == client:
                connection.transport.abort()
                self.dropped += 1
                return
        raise RuntimeError("connection to drop not found")


def status_sequence(*statuses: int, headers: dict[str, str] | None = None) -> Iterator[Reply]:
    """Replies with these statuses (and headers), e.g. ``server.script(*status_sequence(503, 503))``."""
    for status in statuses:
        yield Reply(status, headers=dict(headers or {}))
