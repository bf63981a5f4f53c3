"""``file`` source: JSON Lines or a JSON array, resumable from a byte offset, optionally tailing.

The position is the byte offset just after the last record of a batch, so a
restart seeks straight back to it. A line that is not valid JSON becomes a
:class:`RecordFailure` (handled by the error policy, e.g. dead-lettered with
its offset) instead of stopping the stream. In ``follow`` mode the source
keeps reading as the file grows and never consumes a half-written last line.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import IO

import orjson

from fluxion_flows.spi import (
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    Document,
    OptionSchema,
    OptionType,
    RecordFailure,
    SourceBatch,
    SourceContext,
    SourceProgress,
    SourceProvider,
    StreamingSource,
)

_CHUNK = 1 << 20


class JsonLinesReader:
    """Reads complete lines from a byte offset, keeping the offset exact."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self._handle: IO[bytes] | None = None
        self._buffer = b""

    def _open(self) -> IO[bytes]:
        if self._handle is None:
            self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
            self._handle.seek(self.offset)
        return self._handle

    def read(self, max_records: int, final: bool) -> tuple[list[tuple[bytes, int]], bool]:
        """Up to ``max_records`` (line, offset after it); True when the file had no more whole lines."""
        handle = self._open()
        records: list[tuple[bytes, int]] = []
        exhausted = False
        while len(records) < max_records:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                chunk = handle.read(_CHUNK)
                if chunk:
                    self._buffer += chunk
                    continue
                exhausted = True
                if final and self._buffer:
                    self.offset += len(self._buffer)
                    records.append((self._buffer, self.offset))
                    self._buffer = b""
                break
            line = self._buffer[:newline]
            self._buffer = self._buffer[newline + 1 :]
            self.offset += newline + 1
            if line.strip():
                records.append((line, self.offset))
        return records, exhausted

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class JsonArrayReader:
    """Reads the elements of a top-level JSON array, tracking the byte offset of the next element."""

    def __init__(self, path: Path, offset: int) -> None:
        data = path.read_bytes()
        self._base = offset or data.index(b"[") + 1
        self._text = data[self._base :].decode("utf-8")
        self._index = 0
        self._mark = 0
        self._mark_bytes = 0
        self._decoder = json.JSONDecoder()
        self._done = False

    def _byte_offset(self, index: int) -> int:
        """File offset of character ``index`` of the decoded text, computed incrementally."""
        self._mark_bytes += len(self._text[self._mark : index].encode())
        self._mark = index
        return self._base + self._mark_bytes

    def read(self, max_records: int, final: bool) -> tuple[list[tuple[bytes, int]], bool]:
        records: list[tuple[bytes, int]] = []
        while len(records) < max_records and not self._done:
            self._skip(" \t\r\n,")
            if self._index >= len(self._text) or self._text[self._index] == "]":
                self._done = True
                break
            begin = self._index
            try:
                _, end = self._decoder.raw_decode(self._text, begin)
            except json.JSONDecodeError:
                end = self._next_separator(begin)
            self._index = end
            self._skip(" \t\r\n,")
            records.append((self._text[begin:end].encode(), self._byte_offset(self._index)))
        return records, self._done

    def _skip(self, characters: str) -> None:
        text, index = self._text, self._index
        while index < len(text) and text[index] in characters:
            index += 1
        self._index = index

    def _next_separator(self, begin: int) -> int:
        for index in range(begin, len(self._text)):
            if self._text[index] in ",]\n":
                return index
        return len(self._text)

    def close(self) -> None:
        self._text = ""


Reader = JsonLinesReader | JsonArrayReader


class FileSource(StreamingSource):
    def __init__(
        self, path: Path, file_format: str, offset: int, follow: bool, poll_interval: float, drain: bool
    ) -> None:
        self.path = path
        self.key = str(path)
        self.follow = follow and not drain
        self.poll_interval = poll_interval
        self.format = file_format
        self.start_offset = offset
        self.target = os.path.getsize(path) if path.exists() else 0
        self._reader: Reader | None = None
        self._cancelled = False
        self._offset = offset

    async def start(self) -> None:
        if not self.path.exists() and not self.follow:
            raise FileNotFoundError(f"input file {self.path} does not exist")

    def _open_reader(self) -> Reader | None:
        if self._reader is None and self.path.exists():
            fmt = self.format if self.format != "auto" else _sniff(self.path)
            self._reader = (JsonArrayReader if fmt == "json-array" else JsonLinesReader)(
                self.path, self._offset
            )
        return self._reader

    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        if self._cancelled:
            return None
        reader = self._open_reader()
        if reader is None:
            await asyncio.sleep(min(timeout, self.poll_interval))
            return SourceBatch([])
        records, exhausted = reader.read(max_documents, final=not self.follow)
        if not records:
            if not self.follow and exhausted:
                return None
            await asyncio.sleep(min(timeout, self.poll_interval))
            return SourceBatch([])
        self._offset = records[-1][1]
        return self._decode(records)

    def _decode(self, records: list[tuple[bytes, int]]) -> SourceBatch:
        documents: list[Document] = []
        failures: list[RecordFailure] = []
        key = self.key
        for raw, offset in records:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                failures.append(
                    RecordFailure(f"invalid JSON: {exc}", {key: offset}, raw[:500].decode(errors="replace"))
                )
                continue
            if not isinstance(value, dict):
                value = {"value": value}
            value["_meta"] = {"file": key, "offset": offset}
            documents.append(value)
        return SourceBatch(documents, {key: self._offset}, failures)

    async def cancel(self) -> None:
        self._cancelled = True

    async def close(self) -> None:
        self._cancelled = True
        if self._reader is not None:
            self._reader.close()

    def progress(self) -> SourceProgress | None:
        return SourceProgress(self._offset - self.start_offset, self.target - self.start_offset)

    def metrics(self) -> dict[str, float]:
        size = os.path.getsize(self.path) if self.path.exists() else 0
        return {"offset": self._offset, "lag": max(0, size - self._offset)}


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    return "json-array" if head.startswith(b"[") else "jsonl"


class FileSourceProvider(SourceProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            "file", "File (JSON Lines / JSON array)", "Reads a JSON Lines file or a JSON array, resumably."
        )

    def options(self) -> OptionSchema:
        return OptionSchema(
            [
                ConnectorOption("path", OptionType.STRING, required=True, description="Input file."),
                ConnectorOption(
                    "format",
                    OptionType.ENUM,
                    default="auto",
                    choices=("auto", "jsonl", "json-array"),
                    description="auto looks at the first byte.",
                ),
                ConnectorOption(
                    "follow", OptionType.BOOL, default=False, description="Tail the file as it grows."
                ),
                ConnectorOption(
                    "pollInterval",
                    OptionType.DURATION,
                    default="PT0.2S",
                    description="Tail polling interval.",
                ),
            ]
        )

    def create(self, context: SourceContext, config: ConnectorConfig) -> StreamingSource:
        path = Path(config["path"])
        key = str(path)
        start = context.start_from
        if start.kind == "earliest":
            offset = 0
        elif start.kind == "latest":
            offset = os.path.getsize(path) if path.exists() else 0
        elif start.kind == "positions":
            offset = int(start.positions.get(key, 0))
        else:
            offset = int(context.positions.get(key, 0))
        return FileSource(
            path, config["format"], offset, config["follow"], config["pollInterval"], context.drain
        )
