"""Owner-level (epoch) receivers and consumer groups.

The service's rules, which the emulator follows: a receiver with an owner level takes
the partition (within its consumer group) from receivers with a lower or equal level
and from receivers without one, detaching them with ``amqp:link:stolen``; a lower
level, or no level while an owner exists, is refused. Consumer groups are independent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

from tests.eventhub_emulator.helpers import Reception, send_bodies, wait_until
from tests.support.eventhub_emulator import EventHubEmulator

ClientFactory = Callable[..., EventHubConsumerClient]


@pytest.fixture
async def new_consumer(emulator: EventHubEmulator, hub: str) -> AsyncIterator[ClientFactory]:
    """Makes consumer clients of ``hub`` (one per receiver) and closes them all."""
    clients: list[EventHubConsumerClient] = []

    def make(consumer_group: str = "$Default") -> EventHubConsumerClient:
        client = EventHubConsumerClient.from_connection_string(
            emulator.connection_string(hub), consumer_group=consumer_group
        )
        clients.append(client)
        return client

    yield make
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


async def _stop(*receptions: Reception) -> None:
    await asyncio.gather(*(reception.stop() for reception in receptions))


def _stolen(reception: Reception) -> bool:
    return any("amqp:link:stolen" in str(error) for error in reception.errors)


async def test_higher_owner_level_steals_and_lower_is_refused(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, new_consumer: ClientFactory
) -> None:
    await send_bodies(producer, ["a", "b"], partition_id="0")
    first = Reception(new_consumer(), partition_id="0", starting_position="-1", owner_level=1).start()
    second = Reception(new_consumer(), partition_id="0", starting_position="-1", owner_level=2)
    lower = Reception(new_consumer(), partition_id="0", starting_position="-1", owner_level=1)
    try:
        await first.wait_for(2)
        second.start()
        await second.wait_for(2)
        await wait_until(lambda: _stolen(first), "the first receiver to lose the partition")
        assert "higher epoch of '2'" in str(first.errors[0])

        lower.start()
        await wait_until(lambda: _stolen(lower), "the lower owner level to be refused")
        assert "higher epoch '2' already exists" in str(lower.errors[0])

        await send_bodies(producer, ["c"], partition_id="0")
        assert await second.wait_for(3) == ["a", "b", "c"]
        assert [r.owner_level for r in emulator.receivers(hub, "0")] == [2]
        assert first.bodies() == ["a", "b"]
        assert lower.bodies() == []
    finally:
        await _stop(first, second, lower)


async def test_equal_owner_level_takes_over(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, new_consumer: ClientFactory
) -> None:
    """What the SDK's load balancer relies on: a new owner at level 0 replaces the old one."""
    old = Reception(new_consumer(), partition_id="1", starting_position="-1", owner_level=0).start()
    new = Reception(new_consumer(), partition_id="1", starting_position="-1", owner_level=0)
    try:
        await wait_until(lambda: len(emulator.receivers(hub, "1")) == 1, "the first owner to attach")
        new.start()
        await wait_until(lambda: _stolen(old), "the old owner to be detached")
        await send_bodies(producer, ["x"], partition_id="1")
        assert await new.wait_for(1) == ["x"]
        assert old.bodies() == []
    finally:
        await _stop(old, new)


async def test_owner_detaches_plain_receivers_and_refuses_new_ones(
    emulator: EventHubEmulator, hub: str, new_consumer: ClientFactory
) -> None:
    plain = Reception(new_consumer(), partition_id="2", starting_position="-1").start()
    owner = Reception(new_consumer(), partition_id="2", starting_position="-1", owner_level=3)
    late_plain = Reception(new_consumer(), partition_id="2", starting_position="-1")
    try:
        await wait_until(lambda: len(emulator.receivers(hub, "2")) == 1, "the plain receiver to attach")
        owner.start()
        await wait_until(lambda: _stolen(plain), "the plain receiver to be detached")
        late_plain.start()
        await wait_until(lambda: _stolen(late_plain), "a plain receiver to be refused")
        assert "non-epoch receiver is not allowed" in str(late_plain.errors[0])
        assert [r.owner_level for r in emulator.receivers(hub, "2")] == [3]
    finally:
        await _stop(plain, owner, late_plain)


async def test_consumer_groups_receive_independently(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, new_consumer: ClientFactory
) -> None:
    await send_bodies(producer, ["one", "two"], partition_id="3")
    default = Reception(new_consumer("$Default"), partition_id="3", starting_position="-1", owner_level=1)
    audit = Reception(new_consumer("audit"), partition_id="3", starting_position="-1", owner_level=1)
    plain = Reception(new_consumer("reports"), partition_id="3", starting_position="-1")
    receptions = (default.start(), audit.start(), plain.start())
    try:
        await asyncio.gather(*(r.wait_for(2) for r in receptions))
        await send_bodies(producer, ["three"], partition_id="3")
        results = await asyncio.gather(*(r.wait_for(3) for r in receptions))
        assert results == [["one", "two", "three"]] * 3
        assert all(not r.errors for r in receptions)
        groups = sorted(r.consumer_group for r in emulator.receivers(hub, "3"))
        assert groups == ["$Default", "audit", "reports"]
    finally:
        await _stop(*receptions)
