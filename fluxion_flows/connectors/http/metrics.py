"""Per-sink counters, flattened into the executor's metrics snapshot.

Plain attribute increments on the hot path (no locks: one sink lives on one
event loop); ``snapshot()`` does the formatting only when someone asks.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS_MS: tuple[float, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds (milliseconds) of the latency histogram; a final ``+Inf`` bucket is implied."""


@dataclass
class LatencyHistogram:
    """Cumulative-bucket latency histogram in the Prometheus style."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_MS
    counts: list[int] = field(default_factory=list)
    total_ms: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, millis: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, millis)] += 1
        self.total_ms += millis
        self.count += 1

    def snapshot(self, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out[f"{prefix}.le_{bound:g}"] = running
        out[f"{prefix}.le_inf"] = running + self.counts[-1]
        out[f"{prefix}.sum"] = self.total_ms
        out[f"{prefix}.count"] = self.count
        return out


@dataclass
class HttpSinkMetrics:
    """What one HTTP sink did: requests, documents, bytes, statuses, latency, retries."""

    requests: int = 0
    failed_requests: int = 0
    documents: int = 0
    bytes: int = 0
    empty_batches_skipped: int = 0
    retries: int = 0
    retry_after_honoured: int = 0
    non_retryable: int = 0
    exhausted: int = 0
    circuit_rejections: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def record_response(self, status: int, millis: float) -> None:
        self.requests += 1
        self.statuses[status] += 1
        self.latency.observe(millis)
        if status >= 300:
            self.failed_requests += 1

    def record_exception(self, error: BaseException, millis: float) -> None:
        self.requests += 1
        self.failed_requests += 1
        self.errors[type(error).__name__] += 1
        self.latency.observe(millis)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {
            "requests": self.requests,
            "requests_failed": self.failed_requests,
            "documents": self.documents,
            "bytes": self.bytes,
            "empty_batches_skipped": self.empty_batches_skipped,
            "retries": self.retries,
            "retry_after_honoured": self.retry_after_honoured,
            "non_retryable": self.non_retryable,
            "retries_exhausted": self.exhausted,
            "circuit_rejections": self.circuit_rejections,
        }
        for status, n in sorted(self.statuses.items()):
            out[f"status.{status}"] = n
        for name, n in sorted(self.errors.items()):
            out[f"error.{name}"] = n
        out.update(self.latency.snapshot("latency_ms"))
        return out
