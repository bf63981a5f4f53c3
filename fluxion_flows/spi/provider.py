"""Providers: the factories that plugins register through entry points.

A provider describes itself (``descriptor``), declares its options
(``options``) and builds the runtime object (``create``). The registry
validates option values against ``options()`` before ``create`` is called,
so ``create`` receives a :class:`ConnectorConfig` with typed values and
defaults applied.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.spi.options import OptionSchema
from fluxion_flows.spi.secret import redacted
from fluxion_flows.spi.sink import SinkContext, StreamingSink
from fluxion_flows.spi.source import SourceContext, StreamingSource


class ConnectorKind(enum.StrEnum):
    SOURCE = "source"
    SINK = "sink"


@dataclass(frozen=True)
class ConnectorDescriptor:
    """Identity of a provider: its ``type`` id as used in manifests, and how to present it."""

    type: str
    display_name: str
    description: str = ""


@dataclass(frozen=True)
class ConnectorConfig:
    """Validated option values for one connector block.

    ``values`` holds declared options (typed, defaults applied, secrets as
    :class:`~fluxion_flows.spi.secret.Secret`); ``properties`` holds the
    pass-through client properties the provider accepted as-is.
    """

    type: str
    kind: ConnectorKind
    values: Mapping[str, Any]
    properties: Mapping[str, Any] = field(default_factory=dict)
    path: str = ""

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def redacted(self) -> dict[str, Any]:
        """The configuration with every secret masked, safe for logs and catalogs."""
        return {"type": self.type, **redacted(dict(self.values)), **redacted(dict(self.properties))}


class SyncMode(enum.StrEnum):
    FULL_REFRESH = "FULL_REFRESH"
    INCREMENTAL = "INCREMENTAL"


@dataclass(frozen=True)
class StreamDescriptor:
    """A catalog entry (Fluxion's ``ConnectorStreamDescriptor``)."""

    name: str
    namespace: str | None = None
    json_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    sync_modes: tuple[SyncMode, ...] = (SyncMode.FULL_REFRESH, SyncMode.INCREMENTAL)
    cursor_fields: tuple[str, ...] = ()
    source_defined_cursor: bool = False
    primary_keys: tuple[tuple[str, ...], ...] = ()
    partitions: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "jsonSchema": dict(self.json_schema),
            "syncModes": [m.value for m in self.sync_modes],
            "cursorFields": list(self.cursor_fields),
            "sourceDefinedCursor": self.source_defined_cursor,
            "primaryKeys": [list(k) for k in self.primary_keys],
            "partitions": self.partitions,
        }


class _Provider(ABC):
    @abstractmethod
    def descriptor(self) -> ConnectorDescriptor: ...

    @abstractmethod
    def options(self) -> OptionSchema: ...

    async def discover_streams(self, config: ConnectorConfig) -> list[StreamDescriptor]:
        """The streams this connector can read or write; empty when it has no catalog."""
        return []


class SourceProvider(_Provider):
    """Factory for a source type; register it under the ``fluxion_flows.sources`` entry-point group."""

    kind = ConnectorKind.SOURCE
    shared_claims: bool = False
    """True when several runs of one pipeline split the partitions through the external system
    (a Kafka consumer group, Event Hubs ownership): their checkpoint claims must not fence each other."""

    @abstractmethod
    def create(self, context: SourceContext, config: ConnectorConfig) -> StreamingSource: ...


class SinkProvider(_Provider):
    """Factory for a sink type; register it under the ``fluxion_flows.sinks`` entry-point group."""

    kind = ConnectorKind.SINK

    @abstractmethod
    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink: ...


Provider = SourceProvider | SinkProvider
