"""Runtime sinks: what the executor delivers batches to."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

from fluxion_flows.spi.batch import Document, Positions


class Batch(list[Document]):
    """The documents of one sink call, plus where they came from.

    It *is* a list, so a simple sink just iterates it. ``positions`` are the
    source positions this batch completes and ``key`` a stable identifier
    derived from the source positions it covers (the same batch replayed after
    a crash gets the same key), which sinks use for idempotency.
    """

    __slots__ = ("key", "positions")

    def __init__(
        self, documents: Iterable[Document] = (), positions: Positions | None = None, key: str = ""
    ) -> None:
        super().__init__(documents)
        self.positions: Positions = positions or {}
        self.key = key


@dataclass
class SinkContext:
    """What a sink knows about the run it is part of."""

    pipeline_id: str
    path: str = ""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fluxion_flows.sink"))


class NonRetryableError(Exception):
    """A failure that another attempt cannot fix (e.g. HTTP 400): skip straight to the policy's fallback."""


class RetryLater(Exception):
    """The destination is refusing work for now (e.g. an open circuit breaker).

    Whatever the error policy, the executor waits ``retry_in`` seconds and
    tries again without counting an attempt; meanwhile backpressure holds the
    source, so nothing is lost and the endpoint is not hammered.
    """

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class StreamingSink(ABC):
    """A running sink. ``write`` returns only once the batch is durable at the destination."""

    async def open(self) -> None:
        """Connect; called once before the first write."""

    @abstractmethod
    async def write(self, batch: Batch) -> None:
        """Deliver every document of ``batch``; raise to hand the batch to the error policy."""

    async def flush(self) -> None:
        """Push out anything buffered; called before each checkpoint and at shutdown."""

    async def close(self) -> None:
        """Release connections; called once at the end of the run."""

    def metrics(self) -> dict[str, float]:
        """Sink-specific counters merged into the executor's snapshot."""
        return {}
