"""The ``eventhub`` sink against the emulator: bodies, partitioning, properties, size limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from fluxion_connect_eventhub import EventTooLargeError

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import Batch
from tests.eventhub.util import hub_bodies, sink
from tests.support.eventhub_emulator import EventHubEmulator

MakeHub = Callable[[int], str]


async def test_documents_become_json_events_by_partition_key(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    hub = make_hub(4)
    out = sink(emulator, hub, partitionKeyField="customer.id", propertiesField="headers")
    docs = [
        {"n": i, "customer": {"id": f"c{i % 3}"}, "headers": {"source": "test", "tags": ["a"], "i": i}}
        for i in range(30)
    ]
    await out.open()
    try:
        await out.write(Batch(docs))
    finally:
        await out.close()
    assert sorted(b["n"] for b in hub_bodies(emulator, hub, 4)) == list(range(30))
    for pid in range(4):
        stored = emulator.events(hub, pid)
        keys = {event.partition_key for event in stored}
        assert len(keys) <= 3
        for key in keys:  # one key lives in one partition, in order
            ns = [orjson.loads(e.body)["n"] for e in stored if e.partition_key == key]
            assert ns == sorted(ns)
            assert all(n % 3 == int(str(key)[1:]) for n in ns)
    event = emulator.events(hub, next(p for p in range(4) if emulator.events(hub, p)))[0]
    assert event.properties["source"] == "test"
    assert orjson.loads(event.properties["tags"]) == ["a"]
    assert out.metrics()["sentEvents"] == 30


async def test_fixed_partition_and_batch_size(emulator: EventHubEmulator, make_hub: MakeHub) -> None:
    hub = make_hub(3)
    out = sink(emulator, hub, partitionId="2", batchSize=4)
    await out.open()
    try:
        await out.write(Batch([{"n": i, "_meta": {"partitionId": "9"}} for i in range(10)]))
    finally:
        await out.close()
    assert [orjson.loads(e.body) for e in emulator.events(hub, 2)] == [{"n": i} for i in range(10)]
    assert not emulator.events(hub, 0) and not emulator.events(hub, 1)
    assert out.metrics()["sentBatches"] == 3


async def test_large_batches_split_and_a_too_large_document_is_refused(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    hub = make_hub(1)
    out = sink(emulator, hub)
    filler = "x" * 200_000
    huge = {"n": "huge", "blob": "y" * 1_100_000}
    docs = [{"n": i, "filler": filler} for i in range(8)]
    await out.open()
    try:
        with pytest.raises(EventTooLargeError) as refused:
            await out.write(Batch([*docs[:4], huge, *docs[4:]]))
    finally:
        await out.close()
    assert refused.value.documents == [huge] and refused.value.delivered == 8
    assert [b["n"] for b in hub_bodies(emulator, hub, 1)] == list(range(8))
    assert out.metrics()["sentBatches"] >= 2


async def test_a_sink_opened_and_closed_without_writing_leaves_no_task(
    emulator: EventHubEmulator, make_hub: MakeHub
) -> None:
    """``open()`` connects ahead of the first write; ``close()`` ends that, finished or not."""
    hub = make_hub(1)
    for _ in range(2):
        out = sink(emulator, hub)
        await out.open()
        await out.close()
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "eventhub.sink.connect"]
    assert out.metrics()["sentEvents"] == 0


def test_partition_key_and_partition_id_exclude_each_other(emulator: EventHubEmulator) -> None:
    with pytest.raises(OptionError, match="exclude each other"):
        sink(emulator, "h", partitionKeyField="k", partitionId="0")
