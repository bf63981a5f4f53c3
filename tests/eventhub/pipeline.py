"""Running ``fluxion run`` in subprocesses against the emulator, and a background producer.

Each pipeline is a real process (so SIGKILL is a real crash) that connects to
the in-process emulator over TCP. ``fluxion run`` records its runs in a
Prefect API; one API per test session (started in the background as soon as
the first pipeline test is collected) spares every run the API start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient

from tests.support.eventhub_emulator import EventHubEmulator

ROOT = Path(__file__).resolve().parents[2]


def write_manifest(
    path: Path,
    emulator: EventHubEmulator,
    source_hub: str,
    sink_hub: str,
    *,
    manifest_id: str,
    source: dict[str, Any] | None = None,
    stages: list[dict[str, Any]] | None = None,
    runtime: dict[str, Any] | None = None,
) -> Path:
    """A one-operation manifest: eventhub source → stages → eventhub sink, file checkpoints next to it."""
    execution: dict[str, Any] = {
        "type": "streaming",
        "source": {
            "type": "eventhub",
            "connectionString": emulator.connection_string(source_hub),
            "loadBalancingInterval": "1s",
            **(source or {}),
        },
        "process": {"type": "pipeline", "stages": stages or [{"$set": {"processed": True}}]},
        "sink": {
            "type": "eventhub",
            "connectionString": emulator.connection_string(sink_hub),
            "partitionKeyField": "key",
            "keepMeta": True,
        },
        "checkpoint": {"store": "file", "directory": str(path.parent / "checkpoints"), "interval": "PT0.2S"},
    }
    if runtime:
        execution["runtime"] = runtime
    document = {
        "schemaVersion": "1.0.0",
        "id": manifest_id,
        "version": "1.0.0",
        "operations": {"flow": {"$ref": "#/operationDefs/flow"}},
        "operationDefs": {"flow": {"operationId": "flow", "kind": "trigger", "execution": execution}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def checkpoint_of(manifest: Path, manifest_id: str) -> dict[str, Any]:
    data = (manifest.parent / "checkpoints" / f"{manifest_id}.flow.checkpoint.json").read_bytes()
    result: dict[str, Any] = orjson.loads(data)
    return result


def fluxion(manifest: Path, *args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``fluxion run MANIFEST ARGS`` (``python -m fluxion_flows``, the console script's module)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fluxion_flows", "run", str(manifest), *args],
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Wait for a clean exit (status 0); on failure show the run's output."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(
            f"fluxion run did not finish in {timeout}s:\n{log.read_text()[-3000:]}"
        ) from None
    assert code == 0, f"fluxion run exited {code}:\n{log.read_text()[-3000:]}"


@contextlib.contextmanager
def running(*processes: subprocess.Popen[bytes]) -> Iterator[None]:
    """Kill whatever is still running when the test ends, pass or fail."""
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def output_ids(emulator: EventHubEmulator, hub: str, partitions: int) -> list[int]:
    """The ``id`` of every event in a hub (repeats kept: at-least-once may duplicate)."""
    ids = []
    for pid in range(partitions):
        for event in emulator.events(hub, str(pid)):
            body = orjson.loads(event.body)
            assert body["processed"] is True
            ids.append(int(body["id"]))
    return ids


def output_count(emulator: EventHubEmulator, hub: str, partitions: int) -> int:
    return sum(len(emulator.events(hub, str(pid))) for pid in range(partitions))


class Producer:
    """Sends ``{"id": n, "key": ...}`` events to a hub in a background task until stopped."""

    def __init__(
        self, emulator: EventHubEmulator, hub: str, partitions: int = 4, per_batch: int = 20
    ) -> None:
        self.client = EventHubProducerClient.from_connection_string(emulator.connection_string(hub))
        self.partitions = partitions
        self.per_batch = per_batch
        self.sent = 0
        self._batches = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send(self, count: int) -> None:
        """Send ``count`` events, one batch per partition in turn."""
        while count > 0:
            batch = await self.client.create_batch(partition_id=str(self._batches % self.partitions))
            self._batches += 1
            for _ in range(min(count, self.per_batch)):
                batch.add(EventData(orjson.dumps({"id": self.sent, "key": f"k{self.sent % 7}"})))
                self.sent += 1
                count -= 1
            await self.client.send_batch(batch)

    def start(self) -> Producer:
        async def loop() -> None:
            while not self._stop.is_set():
                await self.send(self.per_batch)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await self._stop.wait()

        self._task = asyncio.create_task(loop())
        return self

    async def stop(self) -> int:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.sent

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()
