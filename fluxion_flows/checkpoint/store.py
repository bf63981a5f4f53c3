"""Checkpoints and the store protocol every backend implements.

A checkpoint records, per pipeline, the source positions up to which every
derived document was acknowledged by the whole sink chain, the stage state
consistent with those positions, and a *generation*: each exclusive run
claims a new generation when it starts, and a save carrying an older
generation is refused. That fence is what stops two runs of one pipeline from
both committing, whatever the orchestrator does.

Positions are merged on save (a save updates the partitions it names and
leaves the others alone), so runs sharing a consumer group (``shared``
claims) can each checkpoint the partitions they own into one record.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.spi.batch import Positions


class StaleGenerationError(RuntimeError):
    """Another run claimed this pipeline after us; we must stop committing."""

    def __init__(self, pipeline_id: str, ours: int, current: int) -> None:
        super().__init__(
            f"checkpoint for pipeline {pipeline_id!r} was claimed by a newer run "
            f"(generation {current}, ours {ours}); this run stops without committing"
        )
        self.pipeline_id = pipeline_id
        self.ours = ours
        self.current = current


@dataclass
class Checkpoint:
    pipeline_id: str
    generation: int = 0
    positions: Positions = field(default_factory=dict)
    stage_state: dict[str, Any] = field(default_factory=dict)
    committed_at: float | None = None
    documents: int = 0
    """Documents delivered by the pipeline over its lifetime (for operators, not for resuming)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "pipelineId": self.pipeline_id,
            "generation": self.generation,
            "positions": self.positions,
            "stageState": self.stage_state,
            "committedAt": self.committed_at,
            "documents": self.documents,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            pipeline_id=str(data["pipelineId"]),
            generation=int(data.get("generation", 0)),
            positions=dict(data.get("positions") or {}),
            stage_state=dict(data.get("stageState") or {}),
            committed_at=data.get("committedAt"),
            documents=int(data.get("documents", 0)),
        )

    def merged_with(self, newer: Checkpoint) -> Checkpoint:
        """The stored record after ``newer`` is saved over this one."""
        return Checkpoint(
            pipeline_id=self.pipeline_id,
            generation=max(self.generation, newer.generation),
            positions={**self.positions, **newer.positions},
            stage_state=newer.stage_state,
            committed_at=newer.committed_at or time.time(),
            documents=newer.documents,
        )


class CheckpointStore(ABC):
    """Where checkpoints live. Implementations must make ``claim`` and ``save`` atomic."""

    @abstractmethod
    async def load(self, pipeline_id: str) -> Checkpoint | None:
        """The last committed checkpoint, or None for a pipeline never run."""

    @abstractmethod
    async def claim(self, pipeline_id: str, *, shared: bool = False) -> Checkpoint:
        """Start a run: the current checkpoint (or an empty one) carrying this run's generation.

        An exclusive claim increments the stored generation, so any older run's
        next save fails. A shared claim (runs splitting partitions through a
        consumer group) joins the current generation without fencing the others.
        """

    @abstractmethod
    async def save(self, checkpoint: Checkpoint) -> None:
        """Commit; raises StaleGenerationError when a newer generation was claimed."""

    async def close(self) -> None:
        """Release resources (connections, clients)."""


def check_generation(pipeline_id: str, ours: int, stored: Checkpoint | None) -> None:
    """The fence shared by every backend."""
    if stored is not None and stored.generation > ours:
        raise StaleGenerationError(pipeline_id, ours, stored.generation)


def claimed(stored: Checkpoint | None, pipeline_id: str, shared: bool) -> Checkpoint:
    """The record a claim writes back: same positions, generation bumped unless shared."""
    base = stored or Checkpoint(pipeline_id=pipeline_id)
    generation = base.generation if shared and stored is not None else base.generation + 1
    return Checkpoint(
        pipeline_id=pipeline_id,
        generation=generation,
        positions=dict(base.positions),
        stage_state=dict(base.stage_state),
        committed_at=base.committed_at,
        documents=base.documents,
    )
