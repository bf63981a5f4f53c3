"""Hooks for whoever watches a run (the CLI progress line, the Prefect layer, tests).

All hooks are awaited outside the hot path: ``on_metrics`` from a ticker every
``observe_interval`` seconds, the others once per checkpoint, dead-lettered
batch, start or stop. A listener that raises is logged and ignored: watching a
pipeline must never break it.
"""

from __future__ import annotations

from typing import Any


class ExecutorListener:
    async def on_start(self, pipeline_id: str) -> None:
        """The run claimed its checkpoint and is about to pull the first batch."""

    async def on_metrics(self, snapshot: dict[str, Any]) -> None:
        """Periodic metrics snapshot (``PipelineMetrics.snapshot()``) plus drain progress when known."""

    async def on_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint was committed (``Checkpoint.to_dict()`` without stage state)."""

    async def on_dead_letter(self, context: dict[str, Any]) -> None:
        """A batch or record went to the dead-letter sink; ``context`` is its error context."""

    async def on_stop(self, snapshot: dict[str, Any], error: BaseException | None) -> None:
        """The run ended (cleanly when ``error`` is None)."""
