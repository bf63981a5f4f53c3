"""Scripted sources and sinks for executor tests: deterministic, observable, with injectable faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fluxion_flows.spi import (
    AbstractAsyncStreamingSource,
    Batch,
    Document,
    RecordFailure,
    SourceBatch,
    StreamingSink,
)


class ListSource(AbstractAsyncStreamingSource):
    """Emits ``total`` numbered documents in batches of ``batch``; position ``p`` = next number."""

    def __init__(
        self,
        total: int,
        batch: int = 10,
        start: int = 0,
        fail_polls: set[int] | None = None,
        bad_records: set[int] | None = None,
        endless: bool = False,
    ) -> None:
        super().__init__(queue_capacity=4)
        self.total = total
        self.batch = batch
        self.next = start
        self.polls = 0
        self.fail_polls = fail_polls or set()
        self.bad_records = bad_records or set()
        self.endless = endless
        self.durable: list[dict[str, Any]] = []
        self.closed = False

    async def poll(self) -> SourceBatch | None:
        self.polls += 1
        if self.polls in self.fail_polls:
            raise ConnectionError(f"poll {self.polls} failed")
        if self.next >= self.total:
            if self.endless:
                await asyncio.sleep(0.01)
                return SourceBatch([])
            return None
        end = min(self.total, self.next + self.batch)
        docs: list[Document] = []
        failures: list[RecordFailure] = []
        for n in range(self.next, end):
            if n in self.bad_records:
                failures.append(RecordFailure("invalid JSON", {"p": n + 1}, raw=f"{{bad {n}"))
            else:
                docs.append({"n": n})
        self.next = end
        return SourceBatch(docs, {"p": end}, failures)

    async def on_durable(self, positions: dict[str, Any]) -> None:
        self.durable.append(dict(positions))

    async def on_close(self) -> None:
        self.closed = True


class RecordingSink(StreamingSink):
    """Records batches; ``fail`` decides per call (1-based) whether to raise."""

    def __init__(
        self,
        name: str = "sink",
        fail: Callable[[int, Batch], BaseException | None] | None = None,
        delay: float = 0.0,
        log: list[str] | None = None,
    ) -> None:
        self.name = name
        self.fail = fail
        self.delay = delay
        self.calls = 0
        self.batches: list[Batch] = []
        self.log = log if log is not None else []
        self.opened = self.closed = False
        self.in_write = asyncio.Event()

    @property
    def documents(self) -> list[Document]:
        return [d for b in self.batches for d in b]

    async def open(self) -> None:
        self.opened = True

    async def write(self, batch: Batch) -> None:
        self.calls += 1
        self.in_write.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        error = self.fail(self.calls, batch) if self.fail else None
        if error is not None:
            raise error
        self.batches.append(batch)
        self.log.append(self.name)

    async def close(self) -> None:
        self.closed = True
