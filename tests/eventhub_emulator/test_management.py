"""Management reads (``$management`` READ) through the SDK's producer and consumer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.exceptions import EventHubError

from tests.eventhub_emulator.helpers import send_bodies
from tests.support.eventhub_emulator import EventHubEmulator


async def test_hub_properties_and_partition_ids(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient, consumer: EventHubConsumerClient
) -> None:
    properties = await producer.get_eventhub_properties()
    assert properties["eventhub_name"] == hub
    assert properties["partition_ids"] == ["0", "1", "2", "3"]
    assert abs(properties["created_at"] - datetime.now(UTC)) < timedelta(minutes=5)
    assert await consumer.get_partition_ids() == ["0", "1", "2", "3"]


async def test_partition_properties_empty_then_filled(
    emulator: EventHubEmulator, hub: str, producer: EventHubProducerClient
) -> None:
    empty = await producer.get_partition_properties("2")
    assert empty["eventhub_name"] == hub
    assert empty["id"] == "2"
    assert empty["is_empty"] is True
    assert empty["beginning_sequence_number"] == 0
    assert empty["last_enqueued_sequence_number"] == -1
    assert empty["last_enqueued_offset"] == "-1"

    await send_bodies(producer, ["a", "b", "c"], partition_id="2")

    filled = await producer.get_partition_properties("2")
    last = emulator.events(hub, "2")[-1]
    assert filled["is_empty"] is False
    assert filled["beginning_sequence_number"] == 0
    assert filled["last_enqueued_sequence_number"] == 2 == last.sequence_number
    assert filled["last_enqueued_offset"] == str(last.offset)
    assert filled["last_enqueued_time_utc"] == last.enqueued_time


async def test_unknown_hub_is_an_error(emulator: EventHubEmulator) -> None:
    client = EventHubProducerClient.from_connection_string(
        emulator.connection_string("no-such-hub"), retry_total=0
    )
    async with client:
        with pytest.raises(EventHubError):
            await client.get_eventhub_properties()
