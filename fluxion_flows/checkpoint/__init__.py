"""Checkpoint stores: where a pipeline's delivered positions and stage state are committed."""

from fluxion_flows.checkpoint.file import FileCheckpointStore
from fluxion_flows.checkpoint.memory import MemoryCheckpointStore
from fluxion_flows.checkpoint.store import Checkpoint, CheckpointStore, StaleGenerationError

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "FileCheckpointStore",
    "MemoryCheckpointStore",
    "StaleGenerationError",
]
