"""The Event Hubs sink: documents as JSON events, sent in the SDK's size-aware batches.

Each document becomes one event whose body is the document as JSON (orjson),
without the source's ``_meta`` unless ``keepMeta`` is set.
Documents go to a fixed partition (``partitionId``), to the partition their
``partitionKeyField`` value hashes to (the service hashes; documents with one
key keep their order), or round-robin. ``write`` returns only after every
``send_batch`` it issued returned, i.e. after the service accepted the
events. A document too large to fit in any event is not sent: once the rest
of the batch is delivered, :class:`EventTooLargeError` carries it to the
error policy (dead letter).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub.aio import EventHubProducerClient

from fluxion_connect_eventhub.connection import HubAddress
from fluxion_flows.spi import Batch, Document, NonRetryableError, SinkContext, StreamingSink

log = logging.getLogger("fluxion_connect_eventhub.sink")

_MAX_CONCURRENT_SENDS = 8
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class SinkSettings:
    """The sink's validated options."""

    address: HubAddress
    partition_key_field: str | None = None
    partition_id: str | None = None
    properties_field: str | None = None
    batch_size: int | None = None
    """Most events per send (None: as many as fit in one batch)."""
    keep_meta: bool = False
    """Also write the source's ``_meta`` into the event body."""


class EventTooLargeError(NonRetryableError):
    """Documents that do not fit in one event even alone; the other documents were delivered."""

    def __init__(self, documents: list[Document], delivered: int, limit: int) -> None:
        super().__init__(
            f"{len(documents)} document(s) too large for one event (the largest event is {limit} bytes); "
            f"{delivered} other document(s) delivered"
        )
        self.documents = documents
        self.delivered = delivered
        self.limit = limit

    @property
    def failed_documents(self) -> list[Document]:
        return self.documents


def field_getter(path: str) -> Callable[[Document], Any]:
    """A reader for a dotted field path (``customer.id``)."""
    parts = path.split(".")
    if len(parts) == 1:
        name = parts[0]
        return lambda document: document.get(name)

    def get(document: Document) -> Any:
        value: Any = document
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


def _key_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)


def _properties(value: Any) -> dict[str | bytes, Any] | None:
    """Application properties from a document field: scalars as they are, anything else as JSON text."""
    if not isinstance(value, dict) or not value:
        return None
    return {
        str(k): v if v is None or isinstance(v, _SCALARS) else orjson.dumps(v).decode()
        for k, v in value.items()
    }


async def _connect(producer: EventHubProducerClient) -> Exception | None:
    """Open the producer's connection and send link ahead of the first write; return the failure.

    Opening takes the SDK about half a second (connection, claims-based
    authorisation, link attach, each step polled every 50 ms); started from
    ``open()`` it overlaps the source's own start-up instead of delaying the
    first delivery.
    """
    try:
        await producer.create_batch()
    except Exception as exc:
        log.debug("eventhub sink: connecting ahead of the first write failed: %s", exc)
        return exc
    return None


def _without_meta(document: Document) -> Document:
    """A shallow copy without ``_meta`` (copy-then-delete is about 3x cheaper than filtering)."""
    body = document.copy()
    del body["_meta"]
    return body


class EventHubSink(StreamingSink):
    def __init__(self, context: SinkContext, settings: SinkSettings) -> None:
        self._context = context
        self._settings = settings
        self._producer: EventHubProducerClient | None = None
        self._key = field_getter(settings.partition_key_field) if settings.partition_key_field else None
        self._props = field_getter(settings.properties_field) if settings.properties_field else None
        self._limit = asyncio.Semaphore(_MAX_CONCURRENT_SENDS)
        self._connecting: asyncio.Task[Exception | None] | None = None
        self._sent_events = 0
        self._sent_batches = 0
        self._too_large = 0

    async def open(self) -> None:
        self._producer = EventHubProducerClient.from_connection_string(
            self._settings.address.connection_string.reveal(), eventhub_name=self._settings.address.hub
        )
        self._connecting = asyncio.create_task(_connect(self._producer), name="eventhub.sink.connect")

    async def write(self, batch: Batch) -> None:
        if not batch:
            return
        producer = self._producer
        if producer is None:
            raise RuntimeError("the eventhub sink was not opened")
        await self._connected()
        groups = self._group(batch)
        outcomes = await asyncio.gather(
            *(self._send_group(producer, key, docs) for key, docs in groups.items()), return_exceptions=True
        )
        results: list[tuple[list[Document], int]] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        too_large = [doc for group in results for doc in group[0]]
        if too_large:
            self._too_large += len(too_large)
            raise EventTooLargeError(too_large, len(batch) - len(too_large), results[0][1])

    async def _connected(self) -> None:
        """Let the first write wait for the early connect, so it never waits for two attempts.

        If the connect is still under way, its failure is this write's (fresh,
        and what the write's own attempt would have met). If it had already
        failed before the write, that failure may be stale: the write then
        connects again through ``create_batch``.
        """
        connecting = self._connecting
        if connecting is None:
            return
        fresh = not connecting.done()
        if fresh:
            await asyncio.wait([connecting])  # a cancelled write leaves it to close()
        self._connecting = None
        if fresh and not connecting.cancelled() and (error := connecting.result()) is not None:
            raise error

    def _group(self, batch: Batch) -> dict[str | None, list[Document]]:
        """Documents by partition key, in batch order (one group when there is no key field)."""
        key_of = self._key
        if key_of is None:
            return {None: list(batch)}
        groups: dict[str | None, list[Document]] = {}
        for document in batch:
            groups.setdefault(_key_text(key_of(document)), []).append(document)
        return groups

    async def _send_group(
        self, producer: EventHubProducerClient, key: str | None, documents: list[Document]
    ) -> tuple[list[Document], int]:
        """Send one key's documents in order; return the ones too large for any event, and the limit."""
        options: dict[str, Any] = {}
        if key is not None:
            options["partition_key"] = key
        elif self._settings.partition_id is not None:
            options["partition_id"] = self._settings.partition_id
        too_large: list[Document] = []
        async with self._limit:
            current = await producer.create_batch(**options)
            limit = current.max_size_in_bytes
            most = self._settings.batch_size
            dumps = orjson.dumps
            props_of = self._props
            keep_meta = self._settings.keep_meta
            for document in documents:
                if keep_meta or "_meta" not in document:
                    event = EventData(dumps(document))
                else:
                    event = EventData(dumps(_without_meta(document)))
                if props_of is not None:
                    properties = _properties(props_of(document))
                    if properties:
                        event.properties = properties
                if most is not None and len(current) >= most:
                    await self._send(producer, current)
                    current = await producer.create_batch(**options)
                try:
                    current.add(event)
                    continue
                except ValueError:
                    if len(current) == 0:
                        too_large.append(document)
                        continue
                await self._send(producer, current)
                current = await producer.create_batch(**options)
                try:
                    current.add(event)
                except ValueError:
                    too_large.append(document)
            if len(current):
                await self._send(producer, current)
        return too_large, limit

    async def _send(self, producer: EventHubProducerClient, batch: EventDataBatch) -> None:
        await producer.send_batch(batch)
        self._sent_events += len(batch)
        self._sent_batches += 1

    async def close(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            await asyncio.wait([connecting])
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()

    def metrics(self) -> dict[str, float]:
        return {
            "sentEvents": float(self._sent_events),
            "sentBatches": float(self._sent_batches),
            "tooLarge": float(self._too_large),
        }
