"""Outages of a peer while the pipeline keeps running: zero loss, and recovery without a restart.

- The HTTP endpoint answers 503 for 30 s (real clock; ``FLUXION_CHAOS_OUTAGE``
  changes the length), then recovers.
- The Kafka consumer's broker connections are cut and refused for a while
  (``FLUXION_CHAOS_CUT``, 5 s by default: longer than the test group's 2 s
  session timeout, so the consumer also loses its group membership), then
  restored, through a loopback TCP proxy the broker advertises.

- The MongoDB server (nx-27017, file-backed) is stopped and started again on
  the same port and data directory while a MongoDB → MongoDB pipeline
  (change stream with an initial snapshot → replace-by-``_id`` sink) copies
  a collection; writes continue after the restart.

All run the executor in this process (one ``run()`` from start to end is
what "without a restart" means) against real peers, with the default error
policy unless the outage needs a long retry budget (the HTTP one), and print
the measured recovery times.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.connectors.memory import MemorySink
from fluxion_flows.pipeline import Pipeline
from tests.chaos.peers import proxied_broker
from tests.chaos.targets import FAST_GROUP, produce
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer
from tests.support.mongo_server import running_mongo

OUTAGE = float(os.environ.get("FLUXION_CHAOS_OUTAGE", "30"))
CUT = float(os.environ.get("FLUXION_CHAOS_CUT", "5"))


def streaming(pipeline_id: str, execution: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": pipeline_id,
        "operationDefs": {"flow": {"execution": {"type": "streaming", **execution}}},
    }


async def wait_for(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


class Outage:
    """Answers 503 from the ``after``-th request on, for ``seconds`` of wall-clock time, then 200."""

    def __init__(self, seconds: float, after: int) -> None:
        self.seconds = seconds
        self.after = after
        self.requests = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.first_success_after: float | None = None
        self.refused = 0

    def __call__(self, request: RecordedRequest) -> Reply:
        self.requests += 1
        now = time.monotonic()
        if self.started is None and self.requests > self.after:
            self.started = now
            self.ended = now + self.seconds
        if self.ended is not None and now < self.ended:
            self.refused += 1
            return Reply(503, body={"error": "maintenance"})
        if self.ended is not None and self.first_success_after is None:
            self.first_success_after = now
        return Reply(200)


@pytest.mark.slow
async def test_http_endpoint_503_for_30s_then_recovers_without_restart(
    http_server: ScriptedHttpServer,
) -> None:
    rate = 1000.0
    count = int(rate * (OUTAGE + 3))
    outage = Outage(OUTAGE, after=5)
    http_server.responder = outage
    document = streaming(
        "outage-http",
        {
            "source": {"type": "generator", "count": count, "rate": rate},
            "sink": {
                "type": "http",
                "endpoint": http_server.url + "/orders",
                "retry": {"maxAttempts": 3, "waitDuration": "50ms"},
            },
            "runtime": {"microBatchSize": 200, "maxBatchWait": "PT0.05S"},
            "errorPolicy": {
                "policy": "retry",
                "maxRetries": 1_000_000,
                "initialBackoff": "100ms",
                "maxBackoff": "1s",
                "then": "failFast",
            },
            "checkpoint": {"store": "memory", "interval": "PT0.5S"},
        },
    )
    executor = await Pipeline.from_manifest(document).executor(store=MemoryCheckpointStore())
    result = await executor.run()

    assert outage.started is not None and outage.ended is not None, "the outage never began"
    assert outage.refused > 0 and outage.first_success_after is not None
    accepted = [d["orderId"] for d in http_server.documents("/orders")]
    assert sorted(set(accepted)) == list(range(count)), "documents lost across the outage"
    assert result.ended_by == "end-of-stream"
    assert result.metrics["documentsOut"] >= count
    assert result.metrics["retries"] > 0 and result.metrics["deadLettered"] == 0
    recovery = outage.first_success_after - outage.ended
    print(
        f"http outage: {OUTAGE:.0f}s of 503 ({outage.refused} refused requests), first success "
        f"{recovery:.3f}s after recovery, {len(accepted) - count} duplicates, "
        f"{result.metrics['retries']} executor retries, all {count} documents delivered"
    )


@pytest.mark.slow
async def test_kafka_broker_connection_cut_and_restored_without_restart() -> None:
    store = f"outage-kafka-{os.getpid()}"
    MemorySink.reset(store)
    with proxied_broker() as peers:
        topic = peers.broker.create_topic("outage", 4)
        first = [{"id": n} for n in range(20_000)]
        await produce(peers.bootstrap, topic, first)
        document = streaming(
            "outage-kafka",
            {
                "source": {
                    "type": "kafka",
                    "bootstrapServers": peers.bootstrap,
                    "topic": topic,
                    "groupId": "outage-group",
                    "max.poll.records": 200,
                    "max.partition.fetch.bytes": 4096,  # little prefetch: the cut lands mid-stream
                    **FAST_GROUP,
                },
                "sink": {"type": "memory", "name": store},
                "runtime": {"microBatchSize": 200, "maxBatchWait": "PT0.05S"},
                "errorPolicy": {"policy": "retry", "maxRetries": 1_000_000, "maxBackoff": "1s"},
                "checkpoint": {"store": "memory", "interval": "PT0.2S"},
            },
        )
        executor = await Pipeline.from_manifest(document).executor(store=MemoryCheckpointStore())
        run = asyncio.create_task(executor.run())
        try:

            def delivered() -> set[int]:
                return {d["id"] for d in MemorySink.store(store)}

            await wait_for(lambda: len(MemorySink.store(store)) > 0, 60, "the first delivery")
            severed = peers.proxy.cut()
            cut_at = time.monotonic()
            during = len(MemorySink.store(store))
            await asyncio.sleep(CUT)  # the outage itself: its length is the test's parameter
            refused = peers.proxy.stats().refused
            accepted_before = peers.proxy.stats().accepted
            at_restore = len(MemorySink.store(store))
            peers.proxy.restore()
            restored_at = time.monotonic()
            await wait_for(lambda: len(MemorySink.store(store)) > at_restore, 60, "a delivery after restore")
            resumed = time.monotonic() - restored_at
            second = [{"id": n} for n in range(20_000, 25_000)]
            await produce(peers.bootstrap, topic, second)
            produced_at = time.monotonic()
            await wait_for(lambda: len(delivered()) == 25_000, 90, "every record after the restore")
            caught_up = time.monotonic()
            assert not run.done(), "the pipeline stopped during the outage"
        finally:
            executor.stop()
            result = await run
        reconnects = peers.proxy.stats().accepted - accepted_before
    documents = MemorySink.store(store)
    MemorySink.reset(store)
    assert {d["id"] for d in documents} == set(range(25_000))
    assert severed > 0, "the cut closed no connection: the consumer was not talking through the proxy"
    assert reconnects > 0, "the consumer never reconnected"
    print(
        f"kafka cut: {severed} connections severed at {during} delivered ({at_restore} at restore), "
        f"{refused} reconnects refused during {CUT:.0f}s (cut {restored_at - cut_at:.1f}s), "
        f"{reconnects} reconnects after; first delivery {resumed:.2f}s after restore; all 25000 delivered "
        f"{caught_up - produced_at:.2f}s after the post-restore produce ({caught_up - restored_at:.2f}s "
        f"after restore); {len(documents) - 25_000} duplicates; ended by {result.ended_by}"
    )


async def reconnected(client: AsyncMongoClient[dict[str, Any]], within: float = 30) -> None:
    """Until a ping succeeds: the test's own pooled connections died with the server too (on a
    standalone server PyMongo does not retry writes, and the first command on a dead pool fails)."""
    deadline = time.monotonic() + within
    while True:
        try:
            await client.admin.command("ping")
            return
        except ConnectionFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_mongodb_server_restart_mid_run_without_restart(tmp_path: Path) -> None:
    """Source and sink both lose their server mid-stream; the run carries on by itself, nothing lost."""
    with running_mongo(tmp_path / "data") as server:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.uri)
        source, target = client.outage.source, client.outage.target
        # The server records a collection's changes from its first watch on; never read (history pin).
        pin = await source.watch()
        await source.insert_many([{"_id": f"d{n:05d}", "phase": "before"} for n in range(3000)])
        document = streaming(
            "outage-mongo",
            {
                "source": {
                    "type": "mongodb",
                    "connectionString": server.uri,
                    "database": "outage",
                    "collection": "source",
                    "initialSnapshot": True,
                    "maxBatchSize": 100,
                    "queueCapacity": 2,
                    "maxAwaitTime": "PT0.1S",
                },
                "sink": {
                    "type": "mongodb",
                    "connectionString": server.uri,
                    "database": "outage",
                    "collection": "target",
                    "mode": "replace",
                },
                "runtime": {"microBatchSize": 100, "maxBatchWait": "PT0.05S", "directHandoff": True},
                "checkpoint": {"store": "memory", "interval": "PT0.2S"},
            },
        )
        executor = await Pipeline.from_manifest(document).executor(store=MemoryCheckpointStore())
        run = asyncio.create_task(executor.run())
        try:
            await wait_for(lambda: run.done() or executor.metrics.documents_out > 0, 60, "the first delivery")
            at_stop = await target.count_documents({})
            stopped_at = time.monotonic()
            await asyncio.to_thread(server.restart)
            restarted_at = time.monotonic()
            at_restart = executor.metrics.documents_out
            await reconnected(client)
            await source.insert_many([{"_id": f"d{n:05d}", "phase": "after"} for n in range(3000, 5000)])
            await wait_for(
                lambda: run.done() or executor.metrics.documents_out > at_restart,
                60,
                "a delivery after restart",
            )
            assert not run.done(), "the pipeline stopped after the server restart"
            resumed = time.monotonic() - restarted_at
            deadline = time.monotonic() + 60
            while await target.count_documents({}) < 5000:
                assert not run.done(), "the pipeline stopped after the server restart"
                assert time.monotonic() < deadline, "not every document arrived after the restart"
                await asyncio.sleep(0.05)
            caught_up = time.monotonic() - restarted_at
            assert not run.done(), "the pipeline stopped after the server restart"
        finally:
            executor.stop()
            result = await run
            await pin.close()
        expected = await source.find({}).sort("_id").to_list(None)
        actual = await target.find({}).sort("_id").to_list(None)
        await client.close()
    assert actual == expected, "the target differs from the source after the restart"
    assert len(actual) == 5000
    print(
        f"mongodb restart: server down {restarted_at - stopped_at:.2f}s at {at_stop} of 3000 copied; first "
        f"delivery {resumed:.2f}s after the server was back, all 5000 in the target {caught_up:.2f}s after; "
        f"{result.metrics['documentsOut'] - 5000} duplicates, {result.metrics['retries']} executor retries; "
        f"ended by {result.ended_by}"
    )
