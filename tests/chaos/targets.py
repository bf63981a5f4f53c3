"""The pairs of the crash matrix, as :class:`~tests.chaos.harness.CrashTarget` implementations.

Each knows how to feed its source, how to see deliveries in its sink, and
how to read its checkpoint file. Every output document carries the input's
``_meta``, so each delivery names the source record it came from.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from pymongo import MongoClient

from tests.chaos.harness import RUN_VARIABLE, Delivery, wait_until
from tests.support.eventhub_emulator import EventHubEmulator
from tests.support.http_server import RecordedRequest, ScriptedHttpServer

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "fetch.max.wait.ms": 100}
"""A new group joins in about a second instead of five (see test-peers.md)."""
T = TypeVar("T")


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
    """Write JSON records keyed by ``id`` (one id, one partition); returns (partition, offset) of each."""
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


class BackgroundLoop:
    """An event loop on a thread of its own, for async clients the synchronous harness keeps open.

    The harness polls ``delivered()`` every few milliseconds from plain code;
    clients that must stay connected between calls (a Kafka consumer
    following the output topic, an Event Hubs producer) live here.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def with_run_stage(path: Path, run: int) -> None:
    """Rewrite the manifest's ``$set`` stage so documents of the next run carry ``run: <run>``.

    For sinks with no per-run header: the run number travels in the document
    itself, so a write that lands after its process died is still told apart.
    """
    document = yaml.safe_load(path.read_text())
    execution = document["operationDefs"]["flow"]["execution"]
    execution["process"] = {"type": "pipeline", "stages": [{"$set": {"run": {"$literal": run}}}]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def seed_checkpoint(directory: Path, pipeline_id: str, positions: dict[str, Any]) -> None:
    """Store a first checkpoint, as an operator would with ``--start-from``, through the store's own API."""
    from fluxion_flows.checkpoint.file import FileCheckpointStore

    async def seed() -> None:
        store = FileCheckpointStore(directory)
        claimed = await store.claim(pipeline_id)
        claimed.positions = dict(positions)
        await store.save(claimed)

    asyncio.run(seed())


KEYS = 200
"""Distinct business keys of the Kafka→MongoDB pair: every key is updated many times over the test."""


class KafkaToMongo:
    """Kafka (4 partitions) → MongoDB upsert by ``_id``; many updates per key.

    Every write is seen on a change stream of the target (nx-27017 stores each
    event's post-image, so ``fullDocument`` is that write's document): the
    document's ``_meta`` names the source record, its ``run`` the run. At the
    end the collection must equal, key by key, the last record fed for that key.
    """

    name = "kafka-mongo"
    final_args: tuple[str, ...] = ("--mode", "drain")

    def __init__(self, tmp: Path, bootstrap: str, topic: str, mongo_uri: str, database: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.checkpoints = tmp / "checkpoints"
        self.client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
        self.collection = self.client[database]["target"]
        # Opened before the first write: the server records changes from a collection's first watch on.
        self._events = self.collection.watch(full_document="updateLookup", max_await_time_ms=20)
        self.manifest = write_manifest(
            tmp / "kafka-mongo.yaml",
            "chaos-kafka-mongo",
            {
                "source": {
                    "type": "kafka",
                    "bootstrapServers": bootstrap,
                    "topic": topic,
                    "groupId": f"group-{topic}",
                    **FAST_GROUP,
                },
                "sink": {
                    "type": "mongodb",
                    "connectionString": mongo_uri,
                    "database": database,
                    "collection": "target",
                    "mode": "upsert",
                    "keepMeta": True,
                },
                "runtime": {"microBatchSize": 100, "maxBatchWait": "PT0.05S"},
                "checkpoint": {"store": "file", "directory": str(self.checkpoints), "interval": "PT0.1S"},
            },
        )
        with_run_stage(self.manifest, 0)
        self._next = 0
        self._expected: set[tuple[str, int]] = set()
        self._last: dict[str, tuple[int, tuple[str, int]]] = {}
        self._writes: list[dict[str, Any]] = []

    def feed(self, count: int) -> None:
        values = [
            {"_id": f"k{n % KEYS}", "id": f"k{n % KEYS}", "n": n}
            for n in range(self._next, self._next + count)
        ]
        self._next += count
        placed = asyncio.run(produce(self.bootstrap, self.topic, values))
        for value, (partition, offset) in zip(values, placed, strict=True):
            origin = (f"{self.topic}:{partition}", offset + 1)
            self._expected.add(origin)
            self._last[value["_id"]] = (value["n"], origin)

    def delivered(self) -> int:
        while (change := self._events.try_next()) is not None:
            self._writes.append(change["fullDocument"])
        return len(self._writes)

    def checkpoint(self) -> dict[str, int]:
        return checkpoint_positions(self.checkpoints)

    def end_of_run(self, run: int) -> None:
        with_run_stage(self.manifest, run + 1)

    def deliveries(self) -> list[Delivery]:
        self.delivered()
        out = []
        for document in self._writes:
            meta = document["_meta"]
            out.append(
                Delivery(int(document["run"]), f"{meta['topic']}:{meta['partition']}", meta["offset"] + 1)
            )
        self.check_state()
        return out

    def check_state(self) -> None:
        """The upsert target equals the expected state exactly: each key holds its last record, no more."""
        actual = {d["_id"]: d for d in self.collection.find({})}
        assert sorted(actual) == sorted(self._last), "the target's keys differ from the keys fed"
        wrong = []
        for key, (n, (partition, after)) in self._last.items():
            document = actual[key]
            meta = document.pop("_meta")
            document.pop("run")
            if document != {"_id": key, "id": key, "n": n} or (
                f"{meta['topic']}:{meta['partition']}",
                meta["offset"] + 1,
            ) != (partition, after):
                wrong.append((key, n, document, meta.get("offset")))
        assert not wrong, f"{len(wrong)} keys do not hold their last value, e.g. {wrong[:3]}"

    def expected(self) -> set[tuple[str, int]]:
        return set(self._expected)

    def close(self) -> None:
        self._events.close()
        self.client.close()


def mongo_checkpoint(directory: Path) -> dict[str, int]:
    """Resume tokens as numbers: nx-27017's tokens are ``nx:<sequence>`` (see ``token_number``)."""
    files = sorted(directory.glob("*.checkpoint.json"))
    if not files:
        return {}
    positions = orjson.loads(files[0].read_bytes())["positions"]
    return {key: token_number(value["resumeToken"]) for key, value in positions.items()}


def token_number(token: dict[str, Any]) -> int:
    """nx-27017 numbers its change events: token ``{"_data": "nx:41"}`` is event 41 (a server detail;
    real MongoDB tokens are opaque, and there the test would map tokens to an order itself)."""
    data = token["_data"]
    assert isinstance(data, str) and data.startswith("nx:"), f"unexpected resume token {token}"
    return int(data[3:])


class TopicReader:
    """Follows every partition of a topic from the start, on a :class:`BackgroundLoop`."""

    def __init__(self, loop: BackgroundLoop, bootstrap: str, topic: str) -> None:
        self.loop = loop
        self.values: list[dict[str, Any]] = []
        self._topic = topic
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Future[None] | None = None
        self._consumer = loop.run(self._start(bootstrap))

    async def _start(self, bootstrap: str) -> AIOKafkaConsumer:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning()
        self._task = asyncio.ensure_future(self._follow())
        return self._consumer

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=50)
            for records in batches.values():
                self.values += [orjson.loads(r.value) for r in records if r.value is not None]

    def count(self) -> int:
        return len(self.values)

    def caught_up(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Every record the topic holds now (waits until the reader reached the end offsets)."""

        async def ends() -> dict[TopicPartition, int]:
            return await self._consumer.end_offsets(self._partitions)

        ends_now = self.loop.run(ends())

        async def reached() -> bool:
            return all([await self._consumer.position(tp) >= end for tp, end in ends_now.items()])

        wait_until(lambda: self.loop.run(reached()), timeout, "the output topic reader to catch up")
        return list(self.values)

    def close(self) -> None:
        async def stop() -> None:
            if self._task is not None:
                self._task.cancel()
            await self._consumer.stop()

        self.loop.run(stop())


class MongoToKafka:
    """MongoDB change stream → Kafka (4 partitions); each output record carries the event's resume token.

    The test holds an idle change stream on the source for the whole run: it
    makes the server record the collection's changes from the start and keeps
    its history while a killed pipeline is down (see the DEVIATION note in
    ``tests/mongo/test_crash.py``). The first run starts from that stream's
    first resume token, stored as the pipeline's checkpoint, so it sees what
    was fed before it started.
    """

    name = "mongo-kafka"
    final_args: tuple[str, ...] = ("--mode", "drain")
    pipeline_id = "chaos-mongo-kafka"

    def __init__(
        self, tmp: Path, mongo_uri: str, database: str, bootstrap: str, topic: str, loop: BackgroundLoop
    ) -> None:
        self.checkpoints = tmp / "checkpoints"
        self.client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
        self.collection = self.client[database]["source"]
        self.namespace = f"{database}.source"
        self._pin = self.collection.watch()  # never read: see the class docstring
        start = self._pin.resume_token
        assert start is not None, "the server gave no resume token"
        self._start = start
        seed_checkpoint(
            self.checkpoints,
            f"{self.pipeline_id}.flow",
            {self.namespace: {"phase": "stream", "resumeToken": start}},
        )
        self.manifest = write_manifest(
            tmp / "mongo-kafka.yaml",
            self.pipeline_id,
            {
                "source": {
                    "type": "mongodb",
                    "connectionString": mongo_uri,
                    "database": database,
                    "collection": "source",
                    "maxBatchSize": 100,
                    "queueCapacity": 2,
                    "maxAwaitTime": "PT0.1S",
                },
                "sink": {"type": "kafka", "bootstrapServers": bootstrap, "topic": topic, "keyField": "_id"},
                "runtime": {"microBatchSize": 100, "maxBatchWait": "PT0.05S"},
                "checkpoint": {"store": "file", "directory": str(self.checkpoints), "interval": "PT0.1S"},
            },
        )
        with_run_stage(self.manifest, 0)
        self.output = TopicReader(loop, bootstrap, topic)
        self._next = 0

    def feed(self, count: int) -> None:
        self.collection.insert_many([{"_id": f"d{n}", "n": n} for n in range(self._next, self._next + count)])
        self._next += count

    def delivered(self) -> int:
        return self.output.count()

    def checkpoint(self) -> dict[str, int]:
        return mongo_checkpoint(self.checkpoints)

    def end_of_run(self, run: int) -> None:
        with_run_stage(self.manifest, run + 1)

    def deliveries(self) -> list[Delivery]:
        out = []
        for value in self.output.caught_up():
            meta = value["_meta"]
            namespace = f"{meta['ns']['db']}.{meta['ns']['coll']}"
            out.append(Delivery(int(value["run"]), namespace, token_number(meta["resumeToken"])))
        return out

    def expected(self) -> set[tuple[str, int]]:
        """Each insert's event, read from a fresh stream resumed at the pin's first token."""
        start = self._start
        events: set[tuple[str, int]] = set()
        with self.collection.watch(resume_after=start, max_await_time_ms=50) as stream:
            while (change := stream.try_next()) is not None:
                events.add((self.namespace, token_number(change["_id"])))
        assert len(events) == self._next, f"{len(events)} change events for {self._next} inserts"
        return events

    def close(self) -> None:
        self._pin.close()
        self.output.close()
        self.client.close()


class EventHubToHttp:
    """Event Hubs (4 partitions, emulator) → HTTP; each request carries the run number in a header.

    Checkpointed positions name the last event delivered per partition
    (``{"sequenceNumber": s, ...}``); in the harness's terms a checkpoint
    covers every event up to ``s + 1`` exclusive, so deliveries are numbered
    ``sequenceNumber + 1`` too.
    """

    name = "eventhub-http"
    final_args: tuple[str, ...] = ("--mode", "drain")
    partitions = 4

    def __init__(
        self,
        tmp: Path,
        emulator: EventHubEmulator,
        hub: str,
        server: ScriptedHttpServer,
        loop: BackgroundLoop,
    ) -> None:
        self.emulator = emulator
        self.hub = hub
        self.loop = loop
        self.checkpoints = tmp / "checkpoints"
        self.manifest = write_manifest(
            tmp / "eventhub-http.yaml",
            "chaos-eventhub-http",
            {
                "source": {
                    "type": "eventhub",
                    "connectionString": emulator.connection_string(hub),
                    "startPosition": "earliest",
                    "loadBalancingInterval": "PT0.5S",
                    "maxBatchSize": 100,
                },
                "sink": {
                    "type": "http",
                    "endpoint": server.url + "/events",
                    "headers": {"X-Chaos-Run": "${" + RUN_VARIABLE + "}"},
                    "retry": {"maxAttempts": 5, "waitDuration": "10ms"},
                },
                "runtime": {"microBatchSize": 100, "maxBatchWait": "PT0.05S"},
                "checkpoint": {"store": "file", "directory": str(self.checkpoints), "interval": "PT0.1S"},
            },
        )
        self.producer = EventHubProducerClient.from_connection_string(emulator.connection_string(hub))
        self.accepted = AcceptedDocuments(server, "/events")
        self._next = 0

    def feed(self, count: int) -> None:
        values = list(range(self._next, self._next + count))
        self._next += count
        self.loop.run(self._send(values))

    async def _send(self, values: list[int]) -> None:
        share = -(-len(values) // self.partitions)
        for partition in range(self.partitions):
            batch = await self.producer.create_batch(partition_id=str(partition))
            for n in values[partition * share : (partition + 1) * share]:
                batch.add(EventData(orjson.dumps({"id": n})))
            await self.producer.send_batch(batch)

    def delivered(self) -> int:
        return self.accepted.refresh()

    def checkpoint(self) -> dict[str, int]:
        files = sorted(self.checkpoints.glob("*.checkpoint.json"))
        if not files:
            return {}
        positions = orjson.loads(files[0].read_bytes())["positions"]
        return {pid: int(position["sequenceNumber"]) + 1 for pid, position in positions.items()}

    def end_of_run(self, run: int) -> None:
        return None

    def deliveries(self) -> list[Delivery]:
        self.accepted.refresh()
        out = []
        for request, documents in self.accepted.parsed:
            run = int(request.header("x-chaos-run") or -1)
            for document in documents:
                meta = document["_meta"]
                out.append(Delivery(run, str(meta["partitionId"]), int(meta["sequenceNumber"]) + 1))
        return out

    def expected(self) -> set[tuple[str, int]]:
        return {
            (str(pid), event.sequence_number + 1)
            for pid in range(self.partitions)
            for event in self.emulator.events(self.hub, pid)
        }

    def close(self) -> None:
        self.loop.run(self.producer.close())
