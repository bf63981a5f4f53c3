"""A queue bounded by documents, not by items: the executor's backpressure.

Batches vary in size, so bounding the number of batches would not bound
memory. ``put`` waits while the queue holds ``capacity`` documents; one item
larger than the whole capacity is still admitted when the queue is empty, so
an oversized batch cannot deadlock the pipeline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from fluxion_flows.executor.metrics import QueueGauge

T = TypeVar("T")


class DocumentQueue(Generic[T]):
    """Single producer, single consumer (each executor stage is one task), so two events suffice."""

    def __init__(self, capacity: int, gauge: QueueGauge) -> None:
        self.capacity = capacity
        self.size = 0
        self._items: deque[tuple[T, int]] = deque()
        self._space = asyncio.Event()
        self._ready = asyncio.Event()
        self._gauge = gauge

    async def put(self, item: T, documents: int) -> None:
        while self._items and self.size + documents > self.capacity:
            self._space.clear()
            await self._space.wait()
        self._items.append((item, documents))
        self.size += documents
        self._gauge.observe(self.size)
        self._ready.set()

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, documents = self._items.popleft()
        self.size -= documents
        self._gauge.observe(self.size)
        self._space.set()
        return item
