"""``stdout`` sink: one JSON document per line on standard output."""

from __future__ import annotations

import sys

import orjson

from fluxion_flows.spi import (
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    StreamingSink,
)


class StdoutSink(StreamingSink):
    def __init__(self, pretty: bool = False) -> None:
        self._option = orjson.OPT_INDENT_2 if pretty else 0

    async def write(self, batch: Batch) -> None:
        out = sys.stdout
        for document in batch:
            out.write(orjson.dumps(document, option=self._option, default=str).decode())
            out.write("\n")
        out.flush()


class StdoutSinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("stdout", "Standard output", "Prints each document as a JSON line.")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [ConnectorOption("pretty", OptionType.BOOL, default=False, description="Indent JSON.")]
        )

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return StdoutSink(config["pretty"])
