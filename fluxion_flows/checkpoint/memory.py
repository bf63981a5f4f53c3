"""In-process checkpoint store: for tests and for runs that must not persist anything."""

from __future__ import annotations

import asyncio
import copy

from fluxion_flows.checkpoint.store import Checkpoint, CheckpointStore, check_generation, claimed


class MemoryCheckpointStore(CheckpointStore):
    def __init__(self) -> None:
        self._records: dict[str, Checkpoint] = {}
        self._lock = asyncio.Lock()

    async def load(self, pipeline_id: str) -> Checkpoint | None:
        record = self._records.get(pipeline_id)
        return copy.deepcopy(record) if record else None

    async def claim(self, pipeline_id: str, *, shared: bool = False) -> Checkpoint:
        async with self._lock:
            record = claimed(self._records.get(pipeline_id), pipeline_id, shared)
            self._records[pipeline_id] = copy.deepcopy(record)
            return record

    async def save(self, checkpoint: Checkpoint) -> None:
        async with self._lock:
            stored = self._records.get(checkpoint.pipeline_id)
            check_generation(checkpoint.pipeline_id, checkpoint.generation, stored)
            merged = stored.merged_with(checkpoint) if stored else checkpoint
            self._records[checkpoint.pipeline_id] = copy.deepcopy(merged)
