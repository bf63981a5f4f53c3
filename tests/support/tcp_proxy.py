"""A loopback TCP proxy the test controls: forward, cut every connection, restore.

Outage tests point a client at the proxy instead of the server, then call
:meth:`TcpProxy.cut` to drop every open connection and refuse new ones
(accepted and reset at once, so the client sees its connection fail rather
than hang) and :meth:`TcpProxy.restore` to let traffic through again. The
server never notices anything but closed connections, which is exactly
what a network partition between client and server looks like to it.

The proxy runs its own asyncio loop in a daemon thread, so synchronous and
asynchronous tests drive it alike; every control call returns once the loop
has applied it. For Kafka the proxy must also be the address the broker
*advertises* (start the broker with ``--advertised-listener-url`` set to the
proxy), or clients would learn the broker's real address from the metadata
and bypass the proxy after bootstrapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 1 << 16


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ProxyStats:
    """Counters a test can assert on (read them through :meth:`TcpProxy.stats`)."""

    accepted: int = 0
    refused: int = 0
    """Connections accepted while cut and reset immediately."""
    severed: int = 0
    """Open connections closed by :meth:`TcpProxy.cut`."""
    bytes_up: int = 0
    bytes_down: int = 0


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target_host:target_port`` until told otherwise."""

    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._stats = ProxyStats()
        self._cut = False
        self._pipes: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"tcp-proxy:{self.port}", daemon=True
        )
        self._server: asyncio.Server | None = None

    # ---------------------------------------------------------------- control
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> int:
        """Close every open connection and reset new ones until :meth:`restore`; returns how many were cut."""
        return self._call(self._sever)

    def restore(self) -> None:
        """Forward new connections again."""

        async def apply() -> None:
            self._cut = False

        self._call(apply)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def stats(self) -> ProxyStats:
        """A copy of the counters (taken on the proxy's loop, so it is consistent)."""

        async def copy() -> ProxyStats:
            return ProxyStats(**vars(self._stats))

        if self._loop.is_closed():  # stopped: nothing changes the counters any more
            return ProxyStats(**vars(self._stats))
        return self._call(copy)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout=30)

    # ---------------------------------------------------------------- serving
    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._sever()
        self._cut = False

    async def _sever(self) -> int:
        self._cut = True
        pipes = list(self._pipes)
        self._pipes.clear()
        for client, upstream in pipes:
            for writer in (client, upstream):
                _abort(writer)
        self._stats.severed += len(pipes)
        return len(pipes)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self._stats.refused += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        if self._cut:  # cut while connecting upstream
            _abort(writer)
            _abort(up_writer)
            return
        self._stats.accepted += 1
        pair = (writer, up_writer)
        self._pipes.add(pair)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, upstream=True),
                self._pump(up_reader, writer, upstream=False),
            )
        finally:
            self._pipes.discard(pair)
            _abort(writer)
            _abort(up_writer)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
                if upstream:
                    self._stats.bytes_up += len(data)
                else:
                    self._stats.bytes_down += len(data)
        # one side closed: close the other so the peer sees it too
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close without a graceful FIN handshake (the peer sees a reset), ignoring already-closed sockets."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
