"""Waiting on conditions with deadlines, and pulling a source until it has given enough.

Tests never sleep to synchronise: they poll a condition until a deadline and
fail with what they were waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fluxion_flows.spi import SourceBatch, StreamingSource


async def wait_for(
    condition: Callable[[], Awaitable[bool] | bool], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Poll ``condition`` (sync or async) every 50 ms until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


async def collect(
    src: StreamingSource,
    until: Callable[[list[SourceBatch]], bool],
    *,
    within: float = 30.0,
    max_documents: int = 500,
) -> list[SourceBatch]:
    """Pull batches until ``until(batches)`` holds or the stream ends; fail after ``within`` seconds."""
    batches: list[SourceBatch] = []
    deadline = time.monotonic() + within
    while not until(batches):
        if time.monotonic() > deadline:
            got = sum(len(b) for b in batches)
            raise AssertionError(f"condition not met within {within}s; got {got} documents")
        batch = await src.next_batch(max_documents, 0.25)
        if batch is None:
            break
        batches.append(batch)
    return batches


def documents(batches: Iterable[SourceBatch]) -> list[dict[str, Any]]:
    return [doc for batch in batches for doc in batch.documents]


def has(count: int) -> Callable[[list[SourceBatch]], bool]:
    """``until`` for :func:`collect`: at least ``count`` documents or failures."""
    return lambda batches: sum(len(b.documents) + len(b.failures) for b in batches) >= count


def merged_positions(batches: Iterable[SourceBatch]) -> dict[str, Any]:
    positions: dict[str, Any] = {}
    for batch in batches:
        positions.update(batch.positions)
    return positions
