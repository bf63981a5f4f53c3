"""Turning Kafka records into documents (and back): the connector's hot path.

A value becomes the document itself when it is a JSON object; any other
value (a JSON array or scalar, a string, base64 bytes) is wrapped as
``{"value": ...}``. ``_meta`` carries where the record came from: topic,
partition, offset, timestamp (epoch milliseconds), key and headers. A value
that is not valid JSON under the ``json`` deserializer is reported as a
:class:`~fluxion_flows.spi.RecordFailure` naming its partition and offset,
never dropped and never allowed to stop the batch.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from fluxion_flows.spi import Document, RecordFailure

DESERIALIZERS = ("json", "string", "bytes")

Decoder = Callable[[bytes], Any]


class DecodeError(ValueError):
    """A record's key or value cannot be read with the configured deserializer."""


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def _string(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None


def _bytes(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


DECODERS: dict[str, Decoder] = {"json": _json, "string": _string, "bytes": _bytes}


def partition_id(topic: str, partition: int) -> str:
    """The key of a partition in positions and metrics (Kafka topic names never contain ``:``)."""
    return f"{topic}:{partition}"


def split_partition_id(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    if not topic or not partition.isdigit():
        raise ValueError(f"expected a position key like 'topic:0', found {key!r}")
    return topic, int(partition)


def _headers(headers: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in headers:
        value = raw.decode("utf-8", "replace") if raw is not None else None
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def _excerpt(data: bytes | None, limit: int = 512) -> str:
    if data is None:
        return ""
    return data[:limit].decode("utf-8", "replace")


class RecordReader:
    """Converts consumer records of one source into documents or failures."""

    __slots__ = ("_key", "_key_is_string", "_value", "_value_is_json")

    def __init__(self, key_deserializer: str = "string", value_deserializer: str = "json") -> None:
        self._key = DECODERS[key_deserializer]
        self._value = DECODERS[value_deserializer]
        self._value_is_json = value_deserializer == "json"
        self._key_is_string = key_deserializer == "string"

    def read(
        self,
        records: list[ConsumerRecord[bytes, bytes]],
        documents: list[Document],
        failures: list[RecordFailure],
    ) -> None:
        """Append each record's document to ``documents`` or its failure to ``failures``."""
        loads = orjson.loads
        json_error = orjson.JSONDecodeError
        decode_value = self._value
        decode_key = self._key
        fast_json = self._value_is_json
        string_key = self._key_is_string
        for record in records:
            raw = record.value
            raw_key = record.key
            try:
                if raw is None:
                    value: Any = None
                elif fast_json:
                    value = loads(raw)
                else:
                    value = decode_value(raw)
                if raw_key is None:
                    key = None
                elif string_key:
                    key = raw_key.decode()
                else:
                    key = decode_key(raw_key)
            except UnicodeDecodeError as exc:
                failures.append(self._failure(record, DecodeError(f"invalid UTF-8 key: {exc.reason}")))
                continue
            except (DecodeError, json_error) as exc:
                failures.append(self._failure(record, exc))
                continue
            document: Document = value if type(value) is dict else {"value": value}
            document["_meta"] = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": key,
                "headers": _headers(record.headers) if record.headers else {},
            }
            documents.append(document)

    @staticmethod
    def _failure(record: ConsumerRecord[bytes, bytes], exc: Exception) -> RecordFailure:
        message = str(exc) if isinstance(exc, DecodeError) else f"invalid JSON: {exc}"
        return RecordFailure(
            error=f"{message} (topic {record.topic}, partition {record.partition}, offset {record.offset})",
            position={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
            },
            raw=_excerpt(record.value),
            error_type="DeserializationError",
        )
