"""Scale-out on Prefect's distributed machinery: two runs of one Kafka pipeline on a process work pool.

A real Prefect server on PostgreSQL, a process work pool, two ``prefect
worker start`` processes (one flow run each), and one deployment of a Kafka
→ Kafka manifest (continuous, concurrency limit 2, checkpoints in the Prefect
block store). A producer keeps writing to a 4-partition topic that already
holds a backlog. The test triggers two runs and checks:

1. the runs split the partitions: each run's ``fluxion.pipeline.checkpointed``
   events (related to its flow run) carry only the partitions it owns, and
   the two sets are disjoint, non-empty and cover all four;
2. after SIGKILL of one worker and its flow-run process group, the other run
   checkpoints all four partitions (the takeover);
3. nothing is lost: every input record (partition, offset) is in the output
   topic at least once (records carry their origin in ``_meta``);
4. the surviving run, cancelled through the API, ends Cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from fluxion_flows.prefect.deploy import deploy_manifest
from fluxion_flows.prefect.names import EVENT_CHECKPOINTED
from tests.scaleout.conftest import PREFECT, stop_group
from tests.support.kafka_broker import TansuBroker
from tests.support.processes import flow_run_process

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
BACKLOG = 4000
FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "fetch.max.wait.ms": 100}


def kafka_manifest(directory: Path, bootstrap: str, source: str, output: str, group: str) -> Path:
    execution = {
        "type": "streaming",
        "source": {
            "type": "kafka",
            "bootstrapServers": bootstrap,
            "topic": source,
            "groupId": group,
            **FAST_GROUP,
        },
        "process": {"type": "pipeline", "stages": [{"$set": {"scaled": True}}]},
        "sink": {"type": "kafka", "bootstrapServers": bootstrap, "topic": output, "acks": "all"},
    }
    document = {
        "id": "scaleout",
        "operationDefs": {"orders": {"execution": execution}},
        "runtime": {"microBatchSize": 200, "maxBatchWait": "PT0.05S", "metricsInterval": "PT0.5S"},
        "checkpoint": {"interval": "PT0.5S"},
    }
    path = directory / "scaleout.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class Producer:
    """Writes keyed records at a steady pace until stopped; remembers every (partition, offset) written."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.written: set[tuple[int, int]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self, backlog: int) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await self._producer.start()
        await self._send(0, backlog)
        self._task = asyncio.create_task(self._run(backlog))

    async def _send(self, start: int, count: int) -> None:
        assert self._producer is not None
        futures = [
            await self._producer.send(self.topic, orjson.dumps({"n": n}), key=str(n).encode())
            for n in range(start, start + count)
        ]
        for metadata in await asyncio.gather(*futures):
            self.written.add((metadata.partition, metadata.offset))

    async def _run(self, n: int) -> None:
        while not self._stop.is_set():
            await self._send(n, 50)
            n += 50
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.1)  # pacing: about 500 records/s

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class OutputReader:
    """Reads the output topic from the beginning in the background; collects the origins of its records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
        self.topic = topic
        self.origins: set[tuple[int, int]] = set()
        self.duplicates: Counter[int] = Counter()
        self.records = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partition = TopicPartition(self.topic, 0)
        self.consumer.assign([partition])
        await self.consumer.seek_to_beginning(partition)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for batch in (await self.consumer.getmany(timeout_ms=200)).values():
                for record in batch:
                    meta = orjson.loads(record.value)["_meta"]
                    origin = (meta["partition"], meta["offset"])
                    if origin in self.origins:
                        self.duplicates[origin[0]] += 1
                    self.origins.add(origin)
                    self.records += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


async def wait_until(condition: Callable[[], Awaitable[Any]], what: str, deadline: float) -> Any:
    end = time.monotonic() + deadline
    while not (value := await condition()):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)
    return value


async def owned_partitions(flow_run_id: UUID, since: float = 0.0) -> set[int] | None:
    """Partitions in the latest checkpointed event of this flow run (occurring after ``since``)."""
    async with get_client() as client:
        page = await client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=[EVENT_CHECKPOINTED]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
            limit=50,
        )
    events = [e for e in page.events if e.occurred.timestamp() > since and e.payload.get("positions")]
    if not events:
        return None
    latest = max(events, key=lambda e: e.occurred)
    return {int(key.rsplit(":", 1)[1]) for key in latest.payload["positions"]}


def start_worker(pool: str, name: str, api: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_WORKER_ENABLE_CANCELLATION": "true",
        "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("wb") as handle:
        return subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--limit", "1", "--name", name],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


async def test_two_runs_on_a_work_pool_split_partitions_and_survive_a_killed_worker(
    prefect_server: str, kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    suffix = secrets.token_hex(3)
    source = kafka_broker.create_topic(f"scaleout-in-{suffix}", PARTITIONS)
    output = kafka_broker.create_topic(f"scaleout-out-{suffix}", 1)
    path = kafka_manifest(tmp_path, kafka_broker.bootstrap, source, output, f"scaleout-{suffix}")
    pool = f"fluxion-scaleout-{suffix}"
    producer = Producer(kafka_broker.bootstrap, source)
    reader = OutputReader(kafka_broker.bootstrap, output)
    workers: list[subprocess.Popen[bytes]] = []
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        try:
            async with get_client() as client:
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            deployment_id, built = await deploy_manifest(
                path, name="scaleout", work_pool=pool, concurrency_limit=2, working_directory=ROOT
            )
            assert not built.exclusive  # a consumer-group source: parallel runs are allowed
            await producer.start(BACKLOG)
            await reader.start()
            workers = [
                start_worker(pool, f"w{i}", prefect_server, tmp_path / f"worker{i}.log") for i in (1, 2)
            ]
            async with get_client() as client:
                runs = [(await client.create_flow_run_from_deployment(deployment_id)).id for _ in range(2)]
            report = await _scenario(workers, runs, producer, reader)
        finally:
            await producer.stop()
            await reader.stop()
            for worker in workers:
                stop_group(worker)
    print(report)


async def _scenario(
    workers: list[subprocess.Popen[bytes]], runs: list[UUID], producer: Producer, reader: OutputReader
) -> str:
    started = time.monotonic()

    async def placed() -> dict[UUID, subprocess.Popen[bytes]] | None:
        found = {run: w for run in runs for w in workers if flow_run_process(w.pid, run) is not None}
        return found if len(found) == 2 and len(set(map(id, found.values()))) == 2 else None

    placement = await wait_until(placed, "each worker to run one flow run", 90)

    seen: list[Any] = []

    async def split() -> dict[UUID, set[int]] | None:
        owned = {run: await owned_partitions(run) for run in runs}
        seen[:] = [owned]
        sets = [s for s in owned.values() if s]
        if len(sets) == 2 and not sets[0] & sets[1] and sets[0] | sets[1] == set(range(PARTITIONS)):
            return owned  # type: ignore[return-value]
        return None

    try:
        shares = await wait_until(split, "the two runs to checkpoint disjoint shares of the partitions", 60)
    except BaseException:
        print(f"last checkpointed shares: {seen}")
        raise
    split_at = time.monotonic() - started
    victim_run, survivor_run = runs
    victim_worker = placement[victim_run]
    flow_pid = flow_run_process(victim_worker.pid, victim_run)
    assert flow_pid is not None
    flow_group = os.getpgid(flow_pid)
    assert flow_group != os.getpgid(0), "the flow run must not share the test's process group"
    killed_at = time.monotonic()
    os.killpg(victim_worker.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(flow_group, signal.SIGKILL)
    victim_worker.wait()
    wall = time.time()

    async def took_over() -> bool:
        return await owned_partitions(survivor_run, since=wall) == set(range(PARTITIONS))

    await wait_until(took_over, "the surviving run to checkpoint all partitions", 60)
    takeover = time.monotonic() - killed_at
    await producer.stop()

    async def complete() -> bool:
        return producer.written <= reader.origins

    await wait_until(complete, "every input record in the output", 60)
    async with get_client() as client:
        await client.set_flow_run_state(survivor_run, Cancelling(message="scale-out test over"), force=True)
        cancelled_at = time.monotonic()

        async def ended() -> Any:
            state = (await client.read_flow_run(survivor_run)).state
            return state if state is not None and state.is_final() else None

        final = await wait_until(ended, "the surviving run to end", 40)
    stop_seconds = time.monotonic() - cancelled_at
    missing = producer.written - reader.origins
    report = (
        f"scale-out: split {sorted(shares[victim_run])} / {sorted(shares[survivor_run])} "
        f"after {split_at:.1f} s; takeover of all {PARTITIONS} partitions {takeover:.1f} s after SIGKILL; "
        f"{len(producer.written)} input records, {reader.records} output records (duplicates by input "
        f"partition: {dict(sorted(reader.duplicates.items()))}), {len(missing)} missing; "
        f"survivor ended {final.type.value} {stop_seconds:.1f} s after the cancel"
    )
    assert not missing, report
    assert final.is_cancelled(), report
    return report
