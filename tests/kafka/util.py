"""Helpers shared by the Kafka tests: produce, read a topic to its end, connectors, conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fluxion_connect_kafka import KafkaSink, KafkaSinkProvider, KafkaSource, KafkaSourceProvider

from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import ConnectorKind, RunMode, SinkContext, SourceContext, StartFrom

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "fetch.max.wait.ms": 100}
"""Test consumer settings: a new group joins in about a second instead of five (see test-peers.md)."""

REGISTRY = ProviderRegistry(extra=[KafkaSourceProvider(), KafkaSinkProvider()])


def source(
    bootstrap: str,
    topic: str | list[str] | None,
    *,
    pipeline_id: str = "p",
    positions: Mapping[str, Any] | None = None,
    start_from: StartFrom | None = None,
    mode: RunMode = RunMode.CONTINUOUS,
    **options: Any,
) -> KafkaSource:
    raw: dict[str, Any] = {"bootstrapServers": bootstrap, **FAST_GROUP, **options}
    if topic is not None:
        raw["topic"] = topic
    config = REGISTRY.configure(ConnectorKind.SOURCE, "kafka", raw)
    context = SourceContext(
        pipeline_id=pipeline_id,
        positions=dict(positions or {}),
        start_from=start_from or StartFrom(),
        mode=mode,
    )
    created = REGISTRY.create_source(context, config)
    assert isinstance(created, KafkaSource)
    return created


def sink(bootstrap: str, **options: Any) -> KafkaSink:
    config = REGISTRY.configure(ConnectorKind.SINK, "kafka", {"bootstrapServers": bootstrap, **options})
    created = REGISTRY.create_sink(SinkContext(pipeline_id="p"), config)
    assert isinstance(created, KafkaSink)
    return created


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[Any],
    *,
    partition: int | None = None,
    key: Callable[[int], bytes | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Write values (dicts become JSON, bytes are sent as-is); returns how many were written."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    count = 0
    try:
        futures = []
        for index, value in enumerate(values):
            data = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(
                await producer.send(
                    topic, data, partition=partition, key=key(index) if key else None, headers=headers
                )
            )
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def read_topic(bootstrap: str, topic: str, *, within: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning to the high watermark (read, not ListOffsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200)
            for batch in fetched.values():
                records.extend(batch)
            done = True
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    done = False
            if done and not fetched:
                return records
        raise TimeoutError(f"could not read {topic} to its end within {within}s")
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()
