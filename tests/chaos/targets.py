"""The pairs of the crash matrix, as :class:`~tests.chaos.harness.CrashTarget` implementations.

Each knows how to feed its source, how to see deliveries in its sink, and
how to read its checkpoint file. Every output document carries the input's
``_meta``, so each delivery names the source record it came from.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

from tests.chaos.harness import RUN_VARIABLE, Delivery
from tests.support.http_server import RecordedRequest, ScriptedHttpServer

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "fetch.max.wait.ms": 100}
"""A new group joins in about a second instead of five (see test-peers.md)."""


def write_manifest(path: Path, pipeline_id: str, execution: dict[str, Any]) -> Path:
    document = {
        "schemaVersion": "1.0.0",
        "id": pipeline_id,
        "operationDefs": {"flow": {"kind": "trigger", "execution": {"type": "streaming", **execution}}},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def checkpoint_positions(directory: Path) -> dict[str, int]:
    files = sorted(directory.glob("*.checkpoint.json"))
    if not files:
        return {}
    return {k: int(v) for k, v in orjson.loads(files[0].read_bytes())["positions"].items()}


class LineCounter:
    """Counts complete lines of a growing file incrementally (the file is only ever appended to)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lines = 0

    def count(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
            complete = chunk.rfind(b"\n") + 1
            self._lines += chunk.count(b"\n", 0, complete)
            self._offset += complete
        return self._lines


class FileToFile:
    """file (JSON Lines) → ``$set`` → file; runs are told apart by their order in the output file."""

    name = "file-file"
    final_args: tuple[str, ...] = ()

    def __init__(self, tmp: Path) -> None:
        self.input = tmp / "in.jsonl"
        self.output = tmp / "out.jsonl"
        self.checkpoints = tmp / "checkpoints"
        self.input.touch()
        self.manifest = write_manifest(
            tmp / "file-file.yaml",
            "chaos-file",
            {
                "source": {"type": "file", "path": str(self.input)},
                "process": {"type": "pipeline", "stages": [{"$set": {"copied": True}}]},
                "sink": {"type": "file", "path": str(self.output)},
                "runtime": {"microBatchSize": 50, "maxBatchWait": "PT0.01S"},
                "checkpoint": {"store": "file", "directory": str(self.checkpoints), "interval": "PT0.02S"},
            },
        )
        self._size = 0
        self._next = 0
        self._expected: set[tuple[str, int]] = set()
        self._counter = LineCounter(self.output)
        self._boundaries: list[tuple[int, int]] = []

    def feed(self, count: int) -> None:
        lines = [
            orjson.dumps({"id": n, "pad": "x" * 40}) + b"\n" for n in range(self._next, self._next + count)
        ]
        self._next += count
        key = str(self.input)
        for line in lines:
            self._size += len(line)
            self._expected.add((key, self._size))
        with self.input.open("ab") as handle:
            handle.write(b"".join(lines))

    def delivered(self) -> int:
        return self._counter.count()

    def checkpoint(self) -> dict[str, int]:
        return checkpoint_positions(self.checkpoints)

    def end_of_run(self, run: int) -> None:
        self._boundaries.append((run, self._counter.count()))

    def deliveries(self) -> list[Delivery]:
        lines = self.output.read_bytes().split(b"\n")
        out: list[Delivery] = []
        torn: list[bytes] = []
        start = 0
        for run, end in self._boundaries:
            for line in lines[start:end]:
                try:
                    document = orjson.loads(line)
                except orjson.JSONDecodeError:
                    torn.append(line)
                    continue
                assert document["copied"] is True
                meta = document["_meta"]
                out.append(Delivery(run, meta["file"], int(meta["offset"])))
            start = end
        assert not torn, (
            f"{len(torn)} torn lines in the output (a killed run's partial write, appended to by the next "
            f"run): {torn[:3]}"
        )
        return out

    def expected(self) -> set[tuple[str, int]]:
        return set(self._expected)


class AcceptedDocuments:
    """Documents the HTTP server accepted (2xx, complete JSON body), parsed once per request."""

    def __init__(self, server: ScriptedHttpServer, path: str) -> None:
        self.server = server
        self.path = path
        self._seen = 0
        self._count = 0
        self._lock = threading.Lock()
        self.parsed: list[tuple[RecordedRequest, list[Any]]] = []

    def refresh(self) -> int:
        with self._lock:
            requests = self.server.received()
            for request in requests[self._seen :]:
                if request.path != self.path or not 200 <= request.status < 300:
                    continue
                try:
                    documents = request.json()
                except orjson.JSONDecodeError:  # the client died mid-body: nothing was delivered
                    continue
                documents = documents if isinstance(documents, list) else [documents]
                self.parsed.append((request, documents))
                self._count += len(documents)
            self._seen = len(requests)
            return self._count


async def produce(bootstrap: str, topic: str, values: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Write JSON records keyed by ``id``; returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(value), key=str(value.get("id", i)).encode())
            for i, value in enumerate(values)
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metadata]


class KafkaToHttp:
    """Kafka (4 partitions) → HTTP; each request carries the run number in a header (from the environment)."""

    name = "kafka-http"
    final_args: tuple[str, ...] = ("--mode", "drain")

    def __init__(self, tmp: Path, bootstrap: str, topic: str, server: ScriptedHttpServer) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.server = server
        self.checkpoints = tmp / "checkpoints"
        self.manifest = write_manifest(
            tmp / "kafka-http.yaml",
            "chaos-kafka-http",
            {
                "source": {
                    "type": "kafka",
                    "bootstrapServers": bootstrap,
                    "topic": topic,
                    "groupId": f"group-{topic}",
                    **FAST_GROUP,
                },
                "sink": {
                    "type": "http",
                    "endpoint": server.url + "/ingest",
                    "headers": {"X-Chaos-Run": "${" + RUN_VARIABLE + "}"},
                    "retry": {"maxAttempts": 5, "waitDuration": "10ms"},
                },
                "runtime": {"microBatchSize": 200, "maxBatchWait": "PT0.05S"},
                "checkpoint": {"store": "file", "directory": str(self.checkpoints), "interval": "PT0.1S"},
            },
        )
        self._next = 0
        self._expected: set[tuple[str, int]] = set()
        self.accepted = AcceptedDocuments(server, "/ingest")

    def feed(self, count: int) -> None:
        values = [{"id": n} for n in range(self._next, self._next + count)]
        self._next += count
        for partition, offset in asyncio.run(produce(self.bootstrap, self.topic, values)):
            self._expected.add((f"{self.topic}:{partition}", offset + 1))

    def delivered(self) -> int:
        return self.accepted.refresh()

    def checkpoint(self) -> dict[str, int]:
        return checkpoint_positions(self.checkpoints)

    def end_of_run(self, run: int) -> None:
        return None

    def deliveries(self) -> list[Delivery]:
        self.accepted.refresh()
        out = []
        for request, documents in self.accepted.parsed:
            run = int(request.header("x-chaos-run") or -1)
            for document in documents:
                meta = document["_meta"]
                out.append(Delivery(run, f"{meta['topic']}:{meta['partition']}", int(meta["offset"]) + 1))
        return out

    def expected(self) -> set[tuple[str, int]]:
        return set(self._expected)
