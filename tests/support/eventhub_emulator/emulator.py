"""``EventHubEmulator``: the test-facing handle that runs the server on a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from .server import EmulatorServer, ReceiverInfo
from .store import EventStore, Hub, StoredEvent

T = TypeVar("T")

DEFAULT_HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0


class EventHubEmulator:
    """An in-process Event Hubs namespace speaking AMQP 1.0 for the SDK's emulator mode.

    The server runs an asyncio loop on a daemon thread so that tests, whatever loop
    they use, can talk to it with the SDK's async clients. Events survive ``stop()``
    and a later ``start()`` rebinds the same port, so a test can restart the "service"
    under a running client. Usable as a context manager.

    In-process, the server shares the test process's GIL; benchmarks and crash tests
    that need it isolated run ``python -m tests.support.eventhub_emulator`` instead.
    """

    def __init__(self, hubs: dict[str, int] | None = None, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.store = EventStore(hubs)
        self.host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: EmulatorServer | None = None

    @property
    def port(self) -> int:
        """The bound port (0 until the first ``start()`` when asked for a free port)."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def connection_string(self, hub: str) -> str:
        """The SDK's emulator-mode connection string for ``hub`` (plain AMQP, any key)."""
        return (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName=k;SharedAccessKey=v;"
            f"UseDevelopmentEmulator=true;EntityPath={hub}"
        )

    def add_hub(self, name: str, partitions: int) -> Hub:
        """Create another hub; usable while the server runs."""
        return self.store.add_hub(name, partitions)

    def events(self, hub: str, partition: str | int) -> list[StoredEvent]:
        """A snapshot of the events stored in one partition, oldest first."""
        return self.store.events(hub, str(partition))

    def receivers(self, hub: str, partition: str | int) -> list[ReceiverInfo]:
        """The receivers attached to a partition right now: group, owner level, credit.

        Lets tests wait for a consumer to be attached (before sending "latest" events)
        or for a consumer to stop granting credit, instead of sleeping.
        """
        server = self._server
        if server is None:
            return []
        return self._call(lambda: server.receivers(hub, str(partition)))

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server thread, which owns all proton objects."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("event hub emulator is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=START_TIMEOUT_SECONDS)

    def start(self) -> EventHubEmulator:
        """Start serving and return once the port is bound."""
        if self.running:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            server = EmulatorServer(self.store)
            try:
                self._port = loop.run_until_complete(server.start(self.host, self._port))
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            self._loop, self._server = loop, server
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(server.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="eventhub-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_SECONDS):
            raise TimeoutError("event hub emulator did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: connections are dropped, stored events are kept."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._thread = None
        self._loop = None
        self._server = None

    def __enter__(self) -> EventHubEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
