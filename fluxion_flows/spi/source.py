"""Runtime sources: what the executor pulls batches from.

``StreamingSource`` is the contract. Most plugins should subclass
:class:`AbstractAsyncStreamingSource` instead and write one method,
``poll()``: the base class runs it in a background task feeding a bounded
queue (backpressure), turns ``None`` into end-of-stream, surfaces ``poll()``
errors to the executor's error policy and stops cleanly on ``cancel()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.spi.batch import Document, Positions, SourceBatch


class RunMode(enum.StrEnum):
    CONTINUOUS = "continuous"
    DRAIN = "drain"


@dataclass(frozen=True)
class StartFrom:
    """Where a source starts when the run begins.

    ``checkpoint`` (the default) resumes from the checkpointed positions and
    falls back to the source's own default (e.g. ``auto.offset.reset``) for
    partitions it has none for. ``positions`` carries explicit per-partition
    positions, ``timestamp`` an epoch time in seconds.
    """

    kind: str = "checkpoint"  # checkpoint | earliest | latest | timestamp | positions
    timestamp: float | None = None
    positions: Positions = field(default_factory=dict)


@dataclass
class SourceContext:
    """Everything a source needs to know about the run it is part of."""

    pipeline_id: str
    positions: Positions = field(default_factory=dict)
    start_from: StartFrom = field(default_factory=StartFrom)
    mode: RunMode = RunMode.CONTINUOUS
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fluxion_flows.source"))
    request_checkpoint: Callable[[], Awaitable[None]] | None = None
    """Set by the executor: commit what has been delivered now (e.g. before partitions are revoked)."""

    @property
    def drain(self) -> bool:
        return self.mode is RunMode.DRAIN


@dataclass(frozen=True)
class SourceProgress:
    """How far a drain has come: consumed and target counts in the source's own unit."""

    consumed: float
    target: float

    @property
    def fraction(self) -> float:
        return 1.0 if self.target <= 0 else min(1.0, self.consumed / self.target)


class StreamingSource(ABC):
    """A running source. The executor calls ``start`` once, then ``next_batch`` until it returns None."""

    async def start(self) -> None:
        """Connect and position the reader; called once before the first ``next_batch``."""

    @abstractmethod
    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        """The next batch, possibly empty when nothing arrived within ``timeout``; None ends the stream."""

    async def on_durable(self, positions: Positions) -> None:
        """These positions are now checkpointed; e.g. commit them to a Kafka consumer group."""

    def owned_positions(self, positions: Positions) -> Positions:
        """The part of ``positions`` this run may checkpoint.

        Runs that split partitions through a consumer group return only the
        partitions currently assigned to them, so one run never overwrites
        another's newer positions.
        """
        return positions

    @abstractmethod
    async def cancel(self) -> None:
        """Stop reading. Pending ``next_batch`` calls return None soon after."""

    async def close(self) -> None:
        """Release connections. Called once, after the executor stopped pulling."""

    def metrics(self) -> dict[str, float]:
        """Source-specific gauges, e.g. ``lag``; merged into the executor's snapshot."""
        return {}

    def progress(self) -> SourceProgress | None:
        """Drain progress when the source knows its target, else None."""
        return None


class SourceFailure(Exception):
    """``poll()`` raised; the executor applies its error policy, then asks for the next batch."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


_END = object()


class AbstractAsyncStreamingSource(StreamingSource):
    """Base class for sources written as a ``poll()`` loop.

    Subclasses implement ``poll()``: return a :class:`SourceBatch` (or a bare
    list of documents, when the source has no positions), an empty batch when
    nothing is available yet, or ``None`` when the stream has ended. Optional
    hooks: ``open()`` before the first poll and ``on_close()`` at the end.
    """

    idle_delay: float = 0.05
    """Pause after an empty poll, so a source that returns at once when idle does not spin."""

    def __init__(self, queue_capacity: int = 16) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max(1, queue_capacity))
        self._task: asyncio.Task[None] | None = None
        self._resume = asyncio.Event()
        self._paused = False
        self._stopping = False
        self._ended = False

    async def open(self) -> None:
        """Connect to the external system. Runs once, before the first ``poll()``."""

    @abstractmethod
    async def poll(self) -> SourceBatch | list[Document] | None:
        """Read what is available now; ``None`` ends the stream, an empty batch does not."""

    async def on_close(self) -> None:
        """Release what ``open()`` acquired."""

    async def start(self) -> None:
        await self.open()
        self._task = asyncio.create_task(self._run(), name=f"{type(self).__name__}.poll")

    async def _run(self) -> None:
        while not self._stopping:
            try:
                result = await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._queue.put(SourceFailure(exc))
                self._paused = True
                await self._resume.wait()
                self._resume.clear()
                continue
            if result is None:
                await self._queue.put(_END)
                return
            batch = result if isinstance(result, SourceBatch) else SourceBatch(list(result))
            if batch.documents or batch.failures or batch.positions:
                await self._queue.put(batch)
            else:
                await asyncio.sleep(self.idle_delay)

    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        if self._ended:
            return None
        if self._paused:
            self._paused = False
            self._resume.set()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            async with asyncio.timeout(timeout):
                item = await self._queue.get()
        except TimeoutError:
            if self._task is not None and self._task.done() and self._queue.empty():
                self._ended = True
                return None
            return SourceBatch([])
        if item is _END:
            self._ended = True
            return None
        if isinstance(item, SourceFailure):
            raise item
        batch: SourceBatch = item
        return batch

    async def cancel(self) -> None:
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._ended = True

    async def close(self) -> None:
        await self.cancel()
        await self.on_close()
