"""Helpers for the Event Hubs connector tests: build connectors, send events, read hubs, wait."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from fluxion_connect_eventhub import (
    EventHubSink,
    EventHubSinkProvider,
    EventHubSource,
    EventHubSourceProvider,
)

from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import ConnectorKind, RunMode, SinkContext, SourceContext, StartFrom
from tests.support.eventhub_emulator import EventHubEmulator

REGISTRY = ProviderRegistry(extra=[EventHubSourceProvider(), EventHubSinkProvider()])


def source(
    emulator: EventHubEmulator,
    hub: str,
    *,
    pipeline_id: str = "p",
    positions: Mapping[str, Any] | None = None,
    start_from: StartFrom | None = None,
    mode: RunMode = RunMode.CONTINUOUS,
    **options: Any,
) -> EventHubSource:
    raw = {"connectionString": emulator.connection_string(hub), "loadBalancingInterval": "1s", **options}
    config = REGISTRY.configure(ConnectorKind.SOURCE, "eventhub", raw)
    context = SourceContext(
        pipeline_id=pipeline_id,
        positions=dict(positions or {}),
        start_from=start_from or StartFrom(),
        mode=mode,
    )
    created = REGISTRY.create_source(context, config)
    assert isinstance(created, EventHubSource)
    return created


def sink(emulator: EventHubEmulator, hub: str, **options: Any) -> EventHubSink:
    raw = {"connectionString": emulator.connection_string(hub), **options}
    config = REGISTRY.configure(ConnectorKind.SINK, "eventhub", raw)
    created = REGISTRY.create_sink(SinkContext(pipeline_id="p"), config)
    assert isinstance(created, EventHubSink)
    return created


async def send(
    emulator: EventHubEmulator,
    hub: str,
    bodies: Iterable[Any],
    *,
    partition_id: str | None = None,
    partition_key: str | None = None,
    properties: Mapping[str | bytes, Any] | None = None,
) -> int:
    """Send bodies (dicts and lists as JSON, str and bytes as they are) in size-aware batches."""
    producer = EventHubProducerClient.from_connection_string(emulator.connection_string(hub))
    count = 0
    async with producer:
        options: dict[str, Any] = {}
        if partition_id is not None:
            options["partition_id"] = partition_id
        if partition_key is not None:
            options["partition_key"] = partition_key
        batch = await producer.create_batch(**options)
        for body in bodies:
            data = body if isinstance(body, str | bytes) else orjson.dumps(body)
            event = EventData(data)
            if properties:
                event.properties = dict(properties)
            try:
                batch.add(event)
            except ValueError:
                await producer.send_batch(batch)
                batch = await producer.create_batch(**options)
                batch.add(event)
            count += 1
        if len(batch):
            await producer.send_batch(batch)
    return count


def hub_bodies(emulator: EventHubEmulator, hub: str, partitions: int) -> list[Any]:
    """Every event body stored in a hub, decoded as JSON, partition by partition."""
    return [orjson.loads(event.body) for pid in range(partitions) for event in emulator.events(hub, str(pid))]
