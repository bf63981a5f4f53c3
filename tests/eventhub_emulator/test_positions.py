"""Receiving from every starting position the SDK offers, inclusive and exclusive.

One module-wide hub holds two batches of five events sent a few milliseconds apart, so
enqueued-time positions have a boundary to find.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

from tests.eventhub_emulator.helpers import Reception, send_bodies, wait_until
from tests.support.eventhub_emulator import EventHubEmulator, StoredEvent

BODIES = [f"e{i}" for i in range(10)]


@pytest.fixture(scope="module")
def filled_hub(emulator: EventHubEmulator) -> str:
    """A two-partition hub whose partition 0 holds e0..e4, then (a later millisecond) e5..e9."""
    name = f"positions-{uuid.uuid4().hex[:8]}"
    emulator.add_hub(name, 2)

    async def fill() -> None:
        connection_string = emulator.connection_string(name)
        async with EventHubProducerClient.from_connection_string(connection_string) as producer:
            await send_bodies(producer, BODIES[:5], partition_id="0")
            first_ms = emulator.events(name, "0")[-1].enqueued_time_ms
            await wait_until(lambda: time.time() * 1000 > first_ms + 2, "the clock to move on")
            await send_bodies(producer, BODIES[5:], partition_id="0")

    asyncio.run(fill())
    return name


def _from(index: int) -> list[str]:
    return BODIES[index:]


# Each case maps the stored events to (starting_position, inclusive, expected bodies).
Case = Callable[[list[StoredEvent]], tuple[object, bool, list[str]]]

CASES: dict[str, Case] = {
    "earliest": lambda _: ("-1", False, _from(0)),
    "earliest-inclusive": lambda _: ("-1", True, _from(0)),
    "offset-exclusive": lambda ev: (str(ev[3].offset), False, _from(4)),
    "offset-inclusive": lambda ev: (str(ev[3].offset), True, _from(3)),
    "sequence-exclusive": lambda ev: (6, False, _from(7)),
    "sequence-inclusive": lambda ev: (6, True, _from(6)),
    "sequence-before-start": lambda ev: (-1, False, _from(0)),
    "time-exclusive": lambda ev: (ev[4].enqueued_time, False, _from(5)),
    "time-inclusive": lambda ev: (ev[5].enqueued_time, True, _from(5)),
    "time-before-start": lambda ev: (ev[0].enqueued_time - timedelta(hours=1), False, _from(0)),
}


async def test_every_starting_position(emulator: EventHubEmulator, filled_hub: str) -> None:
    """Each case reads the partition with its own client; they run concurrently because
    the SDK takes about two seconds to start and stop a receiver."""
    stored = emulator.events(filled_hub, "0")
    plans = {name: case(stored) for name, case in CASES.items()}
    clients = {
        name: EventHubConsumerClient.from_connection_string(
            emulator.connection_string(filled_hub), consumer_group="$Default"
        )
        for name in plans
    }
    receptions = {
        name: Reception(
            clients[name], partition_id="0", starting_position=position, starting_position_inclusive=inclusive
        ).start()
        for name, (position, inclusive, _) in plans.items()
    }
    try:
        await asyncio.gather(
            *(receptions[name].wait_for(len(expected)) for name, (_, _, expected) in plans.items())
        )
    finally:
        await asyncio.gather(*(r.stop() for r in receptions.values()))
        await asyncio.gather(*(c.close() for c in clients.values()))

    assert {name: r.bodies() for name, r in receptions.items()} == {
        name: expected for name, (_, _, expected) in plans.items()
    }
    earliest = receptions["earliest"].events
    assert [e.sequence_number for e in earliest] == [s.sequence_number for s in stored]
    assert [e.offset for e in earliest] == [str(s.offset) for s in stored]
    assert [e.enqueued_time for e in earliest] == [s.enqueued_time for s in stored]


async def test_latest_receives_only_new_events(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, consumer: EventHubConsumerClient
) -> None:
    await send_bodies(producer, ["old-1", "old-2"], partition_id="1")
    reception = Reception(consumer, partition_id="1", starting_position="@latest").start()
    try:
        await wait_until(lambda: len(emulator.receivers(hub, "1")) == 1, "the receiver to attach")
        await send_bodies(producer, ["new-1", "new-2"], partition_id="1")
        assert await reception.wait_for(2) == ["new-1", "new-2"]
    finally:
        await reception.stop()


async def test_time_in_the_future_waits_for_new_events(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, consumer: EventHubConsumerClient
) -> None:
    await send_bodies(producer, ["before"], partition_id="0")
    start = datetime.fromtimestamp(time.time() + 0.001)
    # Wait for the clock to pass ``start``, so events sent from now on are enqueued after it.
    await wait_until(lambda: time.time() > start.timestamp() + 0.002, "the clock to pass the start")
    reception = Reception(consumer, batch=False, partition_id="0", starting_position=start).start()
    try:
        await wait_until(lambda: len(emulator.receivers(hub, "0")) == 1, "the receiver to attach")
        await send_bodies(producer, ["after"], partition_id="0")
        assert await reception.wait_for(1) == ["after"]
    finally:
        await reception.stop()
