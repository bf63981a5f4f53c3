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
        _drop_torn_tail(self.path)
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


def _drop_torn_tail(path: Path) -> None:
    """End the file at a line boundary before appending.

    A kill can stop ``write(2)`` between pages, leaving part of a batch: that
    batch was never acknowledged and is delivered again, and appending after
    the fragment would glue the two into one corrupt line, so the fragment
    is cut. A last line that is a whole JSON value (a file written by hand
    without a final newline) is kept and ended instead.
    """
    if not path.exists():
        return
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        keep = _after_last_newline(handle, end)
        if keep == end:
            return
        handle.seek(keep)
        try:
            orjson.loads(handle.read(end - keep))
        except orjson.JSONDecodeError:
            handle.truncate(keep)
        else:
            handle.write(b"\n")
        os.fsync(handle.fileno())


def _after_last_newline(handle: IO[bytes], end: int, chunk: int = 1 << 16) -> int:
    """Offset just past the file's last newline (0 when it has none), reading backwards."""
    position = end
    while position > 0:
        start = max(0, position - chunk)
        handle.seek(start)
        found = handle.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


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
