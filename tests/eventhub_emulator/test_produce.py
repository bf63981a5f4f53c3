"""Sending: single events and batches, to the hub, by partition key, and to a partition."""

from __future__ import annotations

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient

from tests.eventhub_emulator.helpers import send_bodies
from tests.support.eventhub_emulator import EventHubEmulator


def _bodies(emulator: EventHubEmulator, hub: str, partition: str) -> list[str]:
    return [event.body.decode() for event in emulator.events(hub, partition)]


async def test_batches_without_key_go_round_robin_and_stay_whole(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    for batch in range(4):
        await send_bodies(producer, [f"b{batch}-{i}" for i in range(3)])

    per_partition = [_bodies(emulator, hub, p) for p in "0123"]
    assert sorted(len(bodies) for bodies in per_partition) == [3, 3, 3, 3]
    for bodies in per_partition:
        assert len({body.split("-")[0] for body in bodies}) == 1  # a batch is never split


async def test_same_partition_key_lands_in_same_partition(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    for round_ in range(3):
        await send_bodies(producer, [f"{round_}-{i}" for i in range(2)], partition_key="customer-7")
    await producer.send_event(EventData("single"), partition_key="customer-7")

    holding = [p for p in "0123" if emulator.events(hub, p)]
    assert len(holding) == 1
    events = emulator.events(hub, holding[0])
    assert [e.body.decode() for e in events] == ["0-0", "0-1", "1-0", "1-1", "2-0", "2-1", "single"]
    assert {e.partition_key for e in events} == {"customer-7"}
    assert [e.sequence_number for e in events] == list(range(7))


async def test_send_to_explicit_partition(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    await producer.send_event(EventData("one"), partition_id="2")
    await send_bodies(producer, ["two", "three"], partition_id="3")
    await producer.send_batch([EventData("four")], partition_id="3")

    assert _bodies(emulator, hub, "2") == ["one"]
    assert _bodies(emulator, hub, "3") == ["two", "three", "four"]
    assert _bodies(emulator, hub, "0") == _bodies(emulator, hub, "1") == []


async def test_stored_events_keep_properties_and_get_broker_annotations(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    event = EventData(b'{"id": 1}')
    event.properties = {"kind": "order", "n": 3}
    event.content_type = "application/json"
    await producer.send_batch([event, EventData("second")], partition_id="1")

    first, second = emulator.events(hub, "1")
    assert first.body == b'{"id": 1}'
    assert first.properties == {"kind": "order", "n": 3}
    assert first.message.content_type == "application/json"
    assert (first.sequence_number, second.sequence_number) == (0, 1)
    assert first.offset == 0 < second.offset  # byte positions, not sequence numbers
    assert first.enqueued_time_ms <= second.enqueued_time_ms
