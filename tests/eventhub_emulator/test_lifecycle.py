"""Starting, stopping and restarting the emulator, in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

from tests.eventhub_emulator.helpers import Reception, send_bodies
from tests.support.eventhub_emulator import EventHubEmulator


async def test_restart_keeps_port_and_events() -> None:
    emulator = EventHubEmulator(hubs={"orders": 2, "out": 1})
    with emulator:
        port = emulator.port
        assert port > 0
        async with EventHubProducerClient.from_connection_string(emulator.connection_string("orders")) as p:
            await p.send_event(EventData("before"), partition_id="1")
    assert not emulator.running

    emulator.add_hub("late", 3)
    with emulator:
        assert emulator.port == port
        async with EventHubProducerClient.from_connection_string(emulator.connection_string("orders")) as p:
            await p.send_event(EventData("after"), partition_id="1")
        async with EventHubProducerClient.from_connection_string(emulator.connection_string("late")) as p:
            assert await p.get_partition_ids() == ["0", "1", "2"]
    assert [e.body for e in emulator.events("orders", 1)] == [b"before", b"after"]
    assert [e.sequence_number for e in emulator.events("orders", 1)] == [0, 1]
    emulator.stop()  # stopping a stopped emulator is harmless


async def test_connected_clients_recover_from_a_restart() -> None:
    """Stopping drops connections; the SDK reconnects to the restarted emulator and the
    consumer carries on after the last event it received."""
    with EventHubEmulator(hubs={"orders": 1}) as emulator:
        connection_string = emulator.connection_string("orders")
        producer = EventHubProducerClient.from_connection_string(connection_string)
        consumer = EventHubConsumerClient.from_connection_string(connection_string, consumer_group="$Default")
        reception = Reception(consumer, partition_id="0", starting_position="-1")
        try:
            await send_bodies(producer, ["before"], partition_id="0")
            reception.start()
            await reception.wait_for(1)
            await asyncio.to_thread(emulator.stop)
            await asyncio.to_thread(emulator.start)
            await send_bodies(producer, ["after"], partition_id="0")
            assert await reception.wait_for(2) == ["before", "after"]
        finally:
            await reception.stop()
            await asyncio.gather(consumer.close(), producer.close())


def test_bad_hub_definitions_are_refused() -> None:
    emulator = EventHubEmulator(hubs={"orders": 1})
    with pytest.raises(ValueError):
        emulator.add_hub("orders", 2)
    with pytest.raises(ValueError):
        emulator.add_hub("empty", 0)


async def test_runs_as_a_subprocess() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.eventhub_emulator",
        "--hub",
        "orders:3",
        "--hub",
        "out",
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = int(await asyncio.wait_for(process.stdout.readline(), 20))
        connection_string = (
            f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=v;"
            "UseDevelopmentEmulator=true;EntityPath=orders"
        )
        async with EventHubProducerClient.from_connection_string(connection_string) as producer:
            assert await producer.get_partition_ids() == ["0", "1", "2"]
            await producer.send_event(EventData("hello"), partition_id="2")
            properties = await producer.get_partition_properties("2")
            assert properties["last_enqueued_sequence_number"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
