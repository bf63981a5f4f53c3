"""``memory`` sink: keeps documents in a named in-process list, for tests and benchmarks."""

from __future__ import annotations

from typing import ClassVar

from fluxion_flows.spi import (
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    Document,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    StreamingSink,
)


class MemorySink(StreamingSink):
    """Appends every delivered document to ``MemorySink.stores[name]``."""

    stores: ClassVar[dict[str, list[Document]]] = {}

    def __init__(self, name: str = "default", keep_batches: bool = False) -> None:
        self.name = name
        self.documents = MemorySink.stores.setdefault(name, [])
        self.batches: list[Batch] = []
        self.keep_batches = keep_batches

    async def write(self, batch: Batch) -> None:
        self.documents.extend(batch)
        if self.keep_batches:
            self.batches.append(batch)

    @classmethod
    def store(cls, name: str = "default") -> list[Document]:
        return cls.stores.setdefault(name, [])

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        if name is None:
            cls.stores.clear()
        else:
            cls.stores.pop(name, None)


class MemorySinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("memory", "Memory", "Keeps documents in a named in-process list (tests).")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [ConnectorOption("name", OptionType.STRING, default="default", description="Store name.")]
        )

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return MemorySink(config["name"])
