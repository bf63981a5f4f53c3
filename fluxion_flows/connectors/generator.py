"""``generator`` source: deterministic synthetic orders, for the quickstart, tests and benchmarks.

Document *n* depends only on ``seed`` and *n*, so a run resumed from a
checkpoint produces exactly the documents an uninterrupted run would have.
"""

from __future__ import annotations

import asyncio
import time

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import (
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    Document,
    OptionSchema,
    OptionType,
    SourceBatch,
    SourceContext,
    SourceProgress,
    SourceProvider,
    StreamingSource,
)

_MASK = (1 << 64) - 1
_STATUSES = ("PAID", "PAID", "PENDING", "CANCELLED")
_TIERS = ("bronze", "silver", "gold")
_POSITION = "generator"


def _mix(value: int) -> int:
    """SplitMix64 finaliser: a cheap, well-spread hash of the document number."""
    value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    value = (value ^ (value >> 27)) * 0x94D049BB133111EB & _MASK
    return value ^ (value >> 31)


def make_order(seed: int, number: int) -> Document:
    """Order number ``number`` of the stream identified by ``seed``."""
    h = _mix((number * 0x9E3779B97F4A7C15 + seed) & _MASK)
    return {
        "orderId": number,
        "customerId": f"c{h % 1000:03d}",
        "status": _STATUSES[(h >> 10) & 3],
        "total": round(((h >> 12) % 100_000) / 100, 2),
        "items": 1 + (h >> 30) % 5,
        "customer": {"tier": _TIERS[(h >> 40) % 3]},
    }


class GeneratorSource(StreamingSource):
    def __init__(self, seed: int, count: int | None, rate: float | None, start: int) -> None:
        self.seed = seed
        self.count = count
        self.rate = rate
        self.next = start
        self._started = time.monotonic()
        self._first = start
        self._cancelled = False

    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        if self._cancelled or (self.count is not None and self.next >= self.count):
            return None
        amount = max_documents if self.count is None else min(max_documents, self.count - self.next)
        if self.rate:
            amount = await self._throttle(amount, timeout)
            if amount == 0:
                return SourceBatch([])
        first = self.next
        seed = self.seed
        documents = [make_order(seed, n) for n in range(first, first + amount)]
        self.next = first + amount
        return SourceBatch(documents, {_POSITION: self.next})

    async def _throttle(self, wanted: int, timeout: float) -> int:
        """How many documents the rate allows now, waiting at most ``timeout`` for one."""
        assert self.rate is not None
        allowed = int((time.monotonic() - self._started) * self.rate) - (self.next - self._first)
        if allowed <= 0:
            await asyncio.sleep(min(timeout, (1 - allowed) / self.rate))
            allowed = int((time.monotonic() - self._started) * self.rate) - (self.next - self._first)
        return max(0, min(wanted, allowed))

    async def cancel(self) -> None:
        self._cancelled = True

    def progress(self) -> SourceProgress | None:
        return SourceProgress(self.next, self.count) if self.count is not None else None

    def metrics(self) -> dict[str, float]:
        return {"position": self.next}


class GeneratorSourceProvider(SourceProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("generator", "Generator", "Deterministic synthetic orders from a seed.")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [
                ConnectorOption("seed", OptionType.INT, default=42, description="Seed of the stream."),
                ConnectorOption(
                    "count", OptionType.INT, description="Documents to produce (unbounded if unset)."
                ),
                ConnectorOption(
                    "rate", OptionType.FLOAT, description="Documents per second (unthrottled if unset)."
                ),
            ]
        )

    def create(self, context: SourceContext, config: ConnectorConfig) -> StreamingSource:
        count = config.get("count")
        if context.drain and count is None:
            raise OptionError("drain mode needs `count` on a generator source", path=(config.path, "count"))
        start_from = context.start_from
        if start_from.kind == "positions":
            start = int(start_from.positions.get(_POSITION, 0))
        elif start_from.kind == "earliest":
            start = 0
        elif start_from.kind == "latest":
            start = count or 0
        else:
            start = int(context.positions.get(_POSITION, 0))
        return GeneratorSource(config["seed"], count, config.get("rate"), start)
