"""Turning received events into documents: the source's hot path.

A body that is a JSON object becomes the document itself; any other JSON
value, and any body that is not JSON at all, is wrapped as ``{"body": ...}``
(text stays text: invalid JSON is not an error). A body that is not even
UTF-8 text is reported as a :class:`~fluxion_flows.spi.RecordFailure`, so the
error policy (dead letter) sees it with its position instead of it being
dropped. ``_meta`` says where the event came from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson
from azure.eventhub import EventData
from azure.eventhub.amqp import AmqpMessageBodyType

from fluxion_flows.spi import Document, RecordFailure

_SEQUENCE = b"x-opt-sequence-number"
_OFFSET = b"x-opt-offset"
_ENQUEUED = b"x-opt-enqueued-time"
_PARTITION_KEY = b"x-opt-partition-key"

Record = tuple[Document | RecordFailure, int, str]
"""A converted event with its sequence number and offset."""


def _text(value: Any) -> Any:
    """AMQP strings and symbols arrive as bytes from the SDK's decoder; JSON wants text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _enqueued(millis: Any) -> str | None:
    if not isinstance(millis, int | float):
        return None
    return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


class _EnqueuedTimes:
    """``_enqueued`` remembering its last answer: events sent together share their enqueued time.

    Formatting a time is about a third of the cost of converting a small
    event, and a received batch mostly holds runs of one enqueued time.
    """

    __slots__ = ("_millis", "_text")

    def __init__(self) -> None:
        self._millis: Any = None
        self._text: str | None = None

    def text(self, millis: Any) -> str | None:
        if millis != self._millis or type(millis) is not type(self._millis):
            self._text = _enqueued(millis)
            self._millis = millis
        return self._text


def _excerpt(data: bytes, limit: int = 512) -> str:
    return data[:limit].decode("utf-8", "replace")


class EventReader:
    """Converts the events of one hub into documents (or failures) with their positions."""

    __slots__ = ("_enqueued", "_group", "_hub")

    def __init__(self, hub: str, consumer_group: str) -> None:
        self._hub = hub
        self._group = consumer_group
        self._enqueued = _EnqueuedTimes()

    def read(self, partition_id: str, events: Iterable[EventData]) -> list[Record]:
        loads = orjson.loads
        json_error = orjson.JSONDecodeError
        data_body = AmqpMessageBodyType.DATA
        enqueued = self._enqueued.text
        records: list[Record] = []
        for event in events:
            message = event.raw_amqp_message
            annotations = message.annotations or {}
            sequence = int(annotations.get(_SEQUENCE, -1))
            raw_offset = annotations.get(_OFFSET)
            offset = raw_offset.decode() if isinstance(raw_offset, bytes) else str(raw_offset)
            if message.body_type is data_body:
                raw = b"".join(message.body)
                try:
                    value: Any = loads(raw)
                except json_error:
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        records.append(
                            (self._failure(partition_id, sequence, offset, raw, exc), sequence, offset)
                        )
                        continue
            else:
                value = _text(message.body)
            document: Document = value if type(value) is dict else {"body": value}
            key = annotations.get(_PARTITION_KEY)
            properties = message.application_properties
            document["_meta"] = {
                "eventHub": self._hub,
                "consumerGroup": self._group,
                "partitionId": partition_id,
                "offset": offset,
                "sequenceNumber": sequence,
                "enqueuedTime": enqueued(annotations.get(_ENQUEUED)),
                "partitionKey": key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
                "properties": _text(properties) if properties else {},
            }
            records.append((document, sequence, offset))
        return records

    def _failure(
        self, partition_id: str, sequence: int, offset: str, raw: bytes, exc: UnicodeDecodeError
    ) -> RecordFailure:
        return RecordFailure(
            error=(
                f"event body is neither JSON nor UTF-8 text ({exc.reason} at byte {exc.start}; "
                f"hub {self._hub}, partition {partition_id}, sequence number {sequence})"
            ),
            position={
                "eventHub": self._hub,
                "partitionId": partition_id,
                "sequenceNumber": sequence,
                "offset": offset,
            },
            raw=_excerpt(raw),
            error_type="DeserializationError",
        )
