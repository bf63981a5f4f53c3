"""``file`` sink: JSON Lines appended to a file, flushed and fsynced before a batch is acknowledged."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO

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


class FileSink(StreamingSink):
    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._handle: IO[bytes] | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab")  # noqa: SIM115 - held for the sink's lifetime

    async def write(self, batch: Batch) -> None:
        if not batch:
            return
        if self._handle is None:
            await self.open()
        assert self._handle is not None
        payload = b"".join(orjson.dumps(doc, default=str) + b"\n" for doc in batch)
        await asyncio.to_thread(self._append, self._handle, payload)

    def _append(self, handle: IO[bytes], payload: bytes) -> None:
        handle.write(payload)
        handle.flush()
        if self.fsync:
            os.fsync(handle.fileno())

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class FileSinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("file", "File (JSON Lines)", "Appends documents to a JSON Lines file.")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [
                ConnectorOption("path", OptionType.STRING, required=True, description="Output file."),
                ConnectorOption(
                    "fsync", OptionType.BOOL, default=True, description="fsync before acknowledging a batch."
                ),
            ]
        )

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return FileSink(config["path"], config["fsync"])
