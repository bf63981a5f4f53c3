"""Consumer behaviour beyond starting positions: checkpoints, backpressure, big events."""

from __future__ import annotations

import asyncio

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio._eventprocessor.in_memory_checkpoint_store import InMemoryCheckpointStore

from tests.eventhub_emulator.helpers import Reception, send_bodies, wait_until
from tests.support.eventhub_emulator import EventHubEmulator


async def test_load_balanced_receive_resumes_after_checkpoints(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    """``receive`` over all partitions with the SDK's in-memory checkpoint store: a second
    client sharing the store starts after the checkpointed events (exclusive offsets)."""
    store = InMemoryCheckpointStore()  # type: ignore[no-untyped-call]
    for round_ in range(4):
        await send_bodies(producer, [f"old-{round_}-a", f"old-{round_}-b"])

    async def receive_all(expected: int) -> list[str]:
        client = EventHubConsumerClient.from_connection_string(
            emulator.connection_string(hub), consumer_group="$Default", checkpoint_store=store
        )
        reception = Reception(client, batch=False, starting_position="-1").start()
        try:
            return await reception.wait_for(expected)
        finally:
            await reception.stop()
            await client.close()

    assert len(set(await receive_all(8))) == 8
    for round_ in range(4):
        await send_bodies(producer, [f"new-{round_}"])
    assert sorted(await receive_all(4)) == ["new-0", "new-1", "new-2", "new-3"]


async def test_consumer_that_stops_granting_credit_gets_no_more_events(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, consumer: EventHubConsumerClient
) -> None:
    """Backpressure: with the callback blocked, the SDK stops granting credit once its
    buffer is full, and the emulator then sends nothing, even as new events arrive."""
    await send_bodies(producer, [f"e{i}" for i in range(300)], partition_id="0")
    release = asyncio.Event()
    reception = Reception(consumer, partition_id="0", starting_position="-1", prefetch=20, max_batch_size=10)

    async def block(_events: list[EventData]) -> None:
        await release.wait()

    reception.on_batch_hook = block
    reception.start()
    try:
        bound = 2 * 20 + 10  # two prefetch grants plus one batch in the callback

        def starved() -> bool:
            receivers = emulator.receivers(hub, "0")
            return bool(reception.events) and len(receivers) == 1 and receivers[0].credit == 0

        await wait_until(starved, "the consumer to run out of credit")
        assert emulator.receivers(hub, "0")[0].delivered <= bound
        # New events make the emulator try to push to its receivers; send_batch returns
        # after the append (and that push) happened on the server thread.
        await send_bodies(producer, [f"late{i}" for i in range(100)], partition_id="0")
        assert emulator.receivers(hub, "0")[0].delivered <= bound
        assert len(reception.events) == 10

        release.set()
        bodies = await reception.wait_for(400)
        assert bodies == [f"e{i}" for i in range(300)] + [f"late{i}" for i in range(100)]
    finally:
        release.set()
        await reception.stop()


async def test_event_near_the_message_size_limit_round_trips(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, consumer: EventHubConsumerClient
) -> None:
    body = "x" * 1_000_000
    await producer.send_event(EventData(body), partition_id="1")
    reception = Reception(consumer, partition_id="1", starting_position="-1").start()
    try:
        assert await reception.wait_for(1) == [body]
    finally:
        await reception.stop()
    assert emulator.events(hub, "1")[0].body == body.encode()
