"""Drain mode, deserializers, per-record failures, lag: the Kafka source's non-default paths."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaProducer

from fluxion_flows.spi import RunMode
from tests.kafka.util import produce, source
from tests.support.polling import collect, documents, has, merged_positions, wait_for


async def test_drain_stops_at_end_offsets_seen_at_start_while_producer_writes(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)
    before = await produce(bootstrap, topic, [{"n": i, "phase": "before"} for i in range(4000)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    written_after = 0
    stop = asyncio.Event()

    async def keep_writing() -> None:
        nonlocal written_after
        while not stop.is_set():
            await producer.send_and_wait(topic, orjson.dumps({"phase": "after", "n": written_after}))
            written_after += 1

    writer = asyncio.create_task(keep_writing())
    src = source(bootstrap, topic, groupId=f"g-{topic}", mode=RunMode.DRAIN)
    try:
        await wait_for(lambda: written_after > 20, what="the producer to be writing")
        await src.start()
        batches = await collect(src, lambda b: False, within=60)  # until the source ends the stream
        progress = src.progress()
        await wait_for(lambda: written_after > 200, what="the producer to keep writing")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await writer
        await producer.stop()
        await src.close()
    docs = documents(batches)
    assert len([d for d in docs if d["phase"] == "before"]) == before
    assert len({(d["_meta"]["partition"], d["_meta"]["offset"]) for d in docs}) == len(docs)
    # it ended although the producer kept writing: it did not chase the moving end
    assert len(docs) < before + written_after
    assert progress is not None and progress.fraction == 1.0
    positions = merged_positions(batches)
    assert sum(positions.values()) == len(docs)


async def test_drain_of_an_empty_topic_ends(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    src = source(bootstrap, topic, groupId=f"g-{topic}", mode=RunMode.DRAIN)
    await src.start()
    try:
        batches = await collect(src, lambda b: False, within=30)
    finally:
        await src.close()
    assert documents(batches) == []


async def test_invalid_json_is_a_record_failure_with_partition_and_offset(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    await produce(bootstrap, topic, [b'{"ok": 1}', b"{not json", b'{"ok": 2}', b"[1, 2]"])
    src = source(bootstrap, topic, groupId=f"g-{topic}")
    await src.start()
    try:
        batches = await collect(src, has(4))
    finally:
        await src.close()
    docs = documents(batches)
    assert [d.get("ok") for d in docs] == [1, 2, None]
    assert docs[2]["value"] == [1, 2]  # JSON that is not an object is wrapped
    failures = [f for b in batches for f in b.failures]
    assert len(failures) == 1
    failure = failures[0]
    assert failure.position == {
        "topic": topic,
        "partition": 0,
        "offset": 1,
        "timestamp": failure.position["timestamp"],
    }
    assert "partition 0, offset 1" in failure.error and "invalid JSON" in failure.error
    assert failure.raw == "{not json"
    assert merged_positions(batches) == {f"{topic}:0": 4}  # the failed record's offset is covered


async def test_string_and_bytes_deserializers(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    await produce(bootstrap, topic, [b"plain text", b"\xff\x00binary"], key=lambda i: b'{"id": 7}')
    as_string = source(
        bootstrap, topic, groupId=f"g-{topic}-s", valueDeserializer="string", keyDeserializer="json"
    )
    as_bytes = source(bootstrap, topic, groupId=f"g-{topic}-b", valueDeserializer="bytes")
    for src in (as_string, as_bytes):
        await src.start()
    try:
        strings = await collect(as_string, has(2))
        raw = await collect(as_bytes, has(2))
    finally:
        await as_string.close()
        await as_bytes.close()
    assert documents(strings)[0]["value"] == "plain text"
    assert documents(strings)[0]["_meta"]["key"] == {"id": 7}
    assert len([f for b in strings for f in b.failures]) == 1  # invalid UTF-8 under `string`
    assert [base64.b64decode(d["value"]) for d in documents(raw)] == [b"plain text", b"\xff\x00binary"]
    assert documents(raw)[0]["_meta"]["key"] == '{"id": 7}'


async def test_lag_metric_per_partition_and_total(bootstrap: str, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    await produce(bootstrap, topic, [{"n": i} for i in range(300)], partition=0)
    await produce(bootstrap, topic, [{"n": i} for i in range(100)], partition=1)
    src = source(bootstrap, topic, groupId=f"g-{topic}")
    await src.start()
    try:
        await collect(src, has(100), max_documents=50)
        metrics = src.metrics()
        await collect(src, has(300))
        drained = src.metrics()
    finally:
        await src.close()
    assert metrics["lag"] == metrics[f"lag.{topic}:0"] + metrics[f"lag.{topic}:1"]
    assert 0 < metrics["lag"] <= 300
    assert drained["lag"] == 0 and drained["assignedPartitions"] == 2


async def test_topic_list_and_pattern(bootstrap: str, new_topic: Callable[..., str]) -> None:
    first = new_topic(partitions=1, suffix="-orders")
    second = new_topic(partitions=1, suffix="-orders")
    other = new_topic(partitions=1, suffix="-other")
    for topic in (first, second, other):
        await produce(bootstrap, topic, [{"t": topic}])
    listed = source(bootstrap, [first, second], groupId=f"g-{first}-list")
    pattern = source(bootstrap, None, topicPattern=f"({first}|{second}|{other})", groupId=f"g-{first}-pat")
    for src in (listed, pattern):
        await src.start()
    try:
        from_list = await collect(listed, has(2))
        from_pattern = await collect(pattern, has(3))
    finally:
        await listed.close()
        await pattern.close()
    assert sorted(d["t"] for d in documents(from_list)) == sorted([first, second])
    assert sorted(d["t"] for d in documents(from_pattern)) == sorted([first, second, other])
