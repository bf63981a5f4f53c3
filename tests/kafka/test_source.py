"""The Kafka source against a real broker: documents, positions, commits, start precedence, replay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from fluxion_flows.spi import StartFrom
from tests.kafka.util import committed, produce, source
from tests.support.polling import collect, documents, has, merged_positions


async def test_documents_carry_meta_and_positions_are_next_offsets(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    await produce(
        bootstrap,
        topic,
        [{"n": i} for i in range(6)],
        partition=0,
        key=lambda i: f"k{i}".encode(),
        headers=[("trace", b"abc")],
    )
    await produce(bootstrap, topic, [{"n": 10 + i} for i in range(4)], partition=1)
    src = source(bootstrap, topic, groupId=f"g-{topic}")
    await src.start()
    try:
        batches = await collect(src, has(10))
    finally:
        await src.close()
    docs = documents(batches)
    assert sorted(d["n"] for d in docs) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13]
    first = next(d for d in docs if d["n"] == 0)
    meta = first["_meta"]
    assert meta["topic"] == topic and meta["partition"] == 0 and meta["offset"] == 0
    assert meta["key"] == "k0" and meta["headers"] == {"trace": "abc"}
    assert isinstance(meta["timestamp"], int) and meta["timestamp"] > 0
    assert merged_positions(batches) == {f"{topic}:0": 6, f"{topic}:1": 4}


async def test_resume_from_checkpoint_positions(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    await produce(bootstrap, topic, [{"n": i} for i in range(10)], partition=0)
    await produce(bootstrap, topic, [{"n": i} for i in range(10)], partition=1)
    src = source(bootstrap, topic, groupId=f"g-{topic}", positions={f"{topic}:0": 7, f"{topic}:1": 2})
    await src.start()
    try:
        batches = await collect(src, has(3 + 8))
    finally:
        await src.close()
    offsets = sorted((d["_meta"]["partition"], d["_meta"]["offset"]) for d in documents(batches))
    assert offsets == [(0, 7), (0, 8), (0, 9)] + [(1, o) for o in range(2, 10)]


async def test_on_durable_commits_exactly_those_offsets(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    group = f"g-{topic}"
    await produce(bootstrap, topic, [{"n": i} for i in range(5)], partition=0)
    await produce(bootstrap, topic, [{"n": i} for i in range(3)], partition=1)
    src = source(bootstrap, topic, groupId=group)
    await src.start()
    try:
        batches = await collect(src, has(8))
        await src.on_durable({f"{topic}:0": 4, f"{topic}:1": 3})
        assert await src.consumer.committed(TopicPartition(topic, 0)) == 4
    finally:
        await src.close()
    assert merged_positions(batches) == {f"{topic}:0": 5, f"{topic}:1": 3}
    assert await committed(bootstrap, group, topic, 2) == {0: 4, 1: 3}


async def test_start_precedence_checkpoint_then_group_then_reset(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    group = f"g-{topic}"
    await produce(bootstrap, topic, [{"n": i} for i in range(10)])
    first = source(bootstrap, topic, groupId=group)
    await first.start()
    try:
        await collect(first, has(10))
        await first.on_durable({f"{topic}:0": 6})
    finally:
        await first.close()

    async def first_offset(**kwargs: object) -> int:
        src = source(bootstrap, topic, **kwargs)  # type: ignore[arg-type]
        await src.start()
        try:
            batches = await collect(src, lambda b: bool(documents(b)))
        finally:
            await src.close()
        return int(documents(batches)[0]["_meta"]["offset"])

    assert await first_offset(groupId=group, positions={f"{topic}:0": 2}) == 2  # checkpoint beats the group
    assert await first_offset(groupId=group) == 6  # the group's commit beats auto.offset.reset
    assert await first_offset(groupId=f"{group}-fresh") == 0  # default auto.offset.reset: earliest
    reset: dict[str, Any] = {"auto.offset.reset": "latest"}
    latest = source(bootstrap, topic, groupId=f"{group}-latest", **reset)
    await latest.start()
    try:
        await collect(latest, lambda b: bool(latest.assignment), within=15)
        await produce(bootstrap, topic, [{"n": 99}])
        batches = await collect(latest, lambda b: bool(documents(b)))
    finally:
        await latest.close()
    assert [d["n"] for d in documents(batches)] == [99]


async def test_start_from_earliest_and_explicit_positions(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=2)
    await produce(bootstrap, topic, [{"n": i} for i in range(5)], partition=0)
    await produce(bootstrap, topic, [{"n": i} for i in range(5)], partition=1)
    checkpoint = {f"{topic}:0": 5, f"{topic}:1": 5}
    earliest = source(
        bootstrap, topic, groupId=f"g-{topic}-e", positions=checkpoint, start_from=StartFrom(kind="earliest")
    )
    await earliest.start()
    try:
        batches = await collect(earliest, has(10))
    finally:
        await earliest.close()
    assert len(documents(batches)) == 10

    explicit = source(
        bootstrap,
        topic,
        groupId=f"g-{topic}-p",
        positions=checkpoint,
        start_from=StartFrom(kind="positions", positions={f"{topic}:0": 3}),
    )
    await explicit.start()
    try:
        await produce(bootstrap, topic, [{"n": 5}], partition=1)
        batches = await collect(explicit, has(3))
    finally:
        await explicit.close()
    # partition 0 from the explicit offset 3; partition 1 (no explicit offset) from the checkpoint, 5
    assert sorted((d["_meta"]["partition"], d["_meta"]["offset"]) for d in documents(batches)) == [
        (0, 3),
        (0, 4),
        (1, 5),
    ]


async def test_start_from_timestamp(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    await produce(bootstrap, topic, [{"n": i, "old": True} for i in range(5)])
    records_before = time.time()
    await asyncio.sleep(0.02)  # a record timestamp strictly later than `records_before` (ms resolution)
    await produce(bootstrap, topic, [{"n": i, "old": False} for i in range(5, 8)])
    src = source(
        bootstrap,
        topic,
        groupId=f"g-{topic}",
        start_from=StartFrom(kind="timestamp", timestamp=records_before),
    )
    await src.start()
    try:
        batches = await collect(src, has(3))
    finally:
        await src.close()
    assert [d["n"] for d in documents(batches)] == [5, 6, 7]

    future = source(
        bootstrap,
        topic,
        groupId=f"g-{topic}-future",
        start_from=StartFrom(kind="timestamp", timestamp=time.time() + 3600),
    )
    await future.start()
    try:
        await collect(future, lambda b: bool(future.assignment), within=15)
        await produce(bootstrap, topic, [{"n": 100}])
        batches = await collect(future, lambda b: bool(documents(b)))
    finally:
        await future.close()
    # a time after every record starts at the end (the broker answers offset 0 for it: capped, not obeyed)
    assert [d["n"] for d in documents(batches)] == [100]
