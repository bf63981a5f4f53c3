"""Executor metrics: cheap counters on the hot path, a JSON-friendly snapshot on demand.

Names follow reference §3 (per pipeline and per stage); the snapshot is what
the CLI progress line, the Prefect artifacts and events, and listeners read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageMetrics:
    """Fluxion's ``SrotaX_stage_*`` series for one stage."""

    name: str
    path: str
    invocations: int = 0
    input_docs: int = 0
    output_docs: int = 0
    duration_ms: float = 0.0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "invocations": self.invocations,
            "inputDocs": self.input_docs,
            "outputDocs": self.output_docs,
            "durationMs": round(self.duration_ms, 3),
            "errors": self.errors,
        }


@dataclass
class SinkMetrics:
    type: str
    path: str
    writes: int = 0
    documents: int = 0
    errors: int = 0
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "path": self.path,
            "writes": self.writes,
            "documents": self.documents,
            "errors": self.errors,
            "durationMs": round(self.duration_ms, 3),
        }


@dataclass
class QueueGauge:
    """``stream.backpressure``: documents waiting in a queue, last and max seen."""

    last: int = 0
    max: int = 0

    def observe(self, size: int) -> None:
        self.last = size
        if size > self.max:
            self.max = size


@dataclass
class PipelineMetrics:
    pipeline_id: str
    started_at: float = field(default_factory=time.time)
    batches: int = 0
    documents_in: int = 0
    documents_out: int = 0
    failures: int = 0
    retries: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    checkpoints: int = 0
    last_checkpoint_at: float | None = None
    last_batch_ms: float = 0.0
    total_batch_ms: float = 0.0
    last_batch_size: int = 0
    state_size: int = 0
    transform_queue: QueueGauge = field(default_factory=QueueGauge)
    delivery_queue: QueueGauge = field(default_factory=QueueGauge)
    stages: list[StageMetrics] = field(default_factory=list)
    sinks: list[SinkMetrics] = field(default_factory=list)
    source: dict[str, float] = field(default_factory=dict)
    sink_details: dict[str, dict[str, float]] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable view (reference §3 names in comments)."""
        now = time.time()
        elapsed = max(now - self.started_at, 1e-9)
        return {
            "pipelineId": self.pipeline_id,
            "uptimeSeconds": round(elapsed, 3),
            "batches": self.batches,
            "documentsIn": self.documents_in,
            "documentsOut": self.documents_out,
            "rate": round(self.documents_in / elapsed, 1),
            "failures": self.failures,  # stream.failures
            "retries": self.retries,  # stream.retries
            "skipped": self.skipped,
            "deadLettered": self.dead_lettered,
            "checkpoints": self.checkpoints,
            "checkpointAgeSeconds": (
                round(now - self.last_checkpoint_at, 3) if self.last_checkpoint_at else None
            ),
            "batchDurationMs": round(self.last_batch_ms, 3),  # stream.batch.duration
            "batchSize": self.last_batch_size,  # stream.batch.size
            "lag": self.source.get("lag"),  # stream.lag
            "stateSize": self.state_size,  # stream.state.size
            "backpressure": {  # stream.backpressure
                "transformQueue": {"last": self.transform_queue.last, "max": self.transform_queue.max},
                "deliveryQueue": {"last": self.delivery_queue.last, "max": self.delivery_queue.max},
            },
            "source": dict(self.source),
            "stages": [s.as_dict() for s in self.stages],
            "sinks": [
                {**s.as_dict(), "details": dict(self.sink_details.get(s.path, {}))} for s in self.sinks
            ],
        }
