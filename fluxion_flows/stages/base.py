"""The executor's view of a stage: a batch function with optional checkpointed state.

The executor calls each stage once per micro-batch (``stage(docs) -> docs``)
and measures it, so per-stage metrics come for free. Stateful stages
(``$group``, windows) override ``snapshot``/``restore``: the executor stores
the snapshot in the checkpoint together with the source positions it is
consistent with, and restores it before the first batch of the next run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from fluxion_flows.spi.batch import Document


class Stage:
    """One step of a pipeline. Subclasses override ``__call__`` (and the state hooks if stateful)."""

    stateful: bool = False
    spec_digest: str = ""
    """Digest of the spec the stage was compiled from (see :func:`spec_digest`); checkpoints record it."""

    def __init__(self, name: str, path: str = "") -> None:
        self.name = name
        self.path = path or name

    def __call__(self, documents: list[Document]) -> list[Document]:
        raise NotImplementedError

    def snapshot(self) -> Any:
        """JSON-serialisable state to checkpoint; None for stateless stages."""
        return None

    def restore(self, state: Any) -> None:
        """Load state saved by ``snapshot`` from the checkpoint of a previous run."""

    def state_size(self) -> int:
        """Number of keys or entries held, reported as the ``state.size`` metric."""
        return 0

    @property
    def parts(self) -> list[Stage]:
        """The manifest's stages this one runs: itself, or several when neighbours are fused."""
        return [self]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"


class FunctionStage(Stage):
    """A plain ``list[dict] -> list[dict]`` callable used as a stage."""

    def __init__(self, function: Callable[[list[Document]], list[Document]], name: str | None = None) -> None:
        super().__init__(name or str(getattr(function, "__name__", "function")))
        self._function = function

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self._function(documents)


def spec_digest(spec: Any) -> str:
    """A short digest of a stage spec as written; key order counts (it orders outputs and saved state)."""
    text = json.dumps(spec, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_indexed(stages: Sequence[Stage]) -> list[tuple[int, Stage]]:
    """Each stage with its index in the manifest's list (fused stages take several indices).

    Checkpointed state is keyed by these indices, so they must not depend on
    how the compiler chained stateless neighbours.
    """
    indexed, index = [], 0
    for stage in stages:
        indexed.append((index, stage))
        index += len(stage.parts)
    return indexed


def as_stage(candidate: Stage | Callable[[list[Document]], list[Document]]) -> Stage:
    """Accept compiled stages and bare callables alike."""
    return candidate if isinstance(candidate, Stage) else FunctionStage(candidate)


class StageRuntimeError(Exception):
    """An expression failed on a document at run time (e.g. ``$divide`` by zero).

    Carries the operator and manifest path so the executor's error policy and
    the dead-letter envelope can say exactly where it happened.
    """

    def __init__(self, message: str, *, operator: str = "", path: str = "") -> None:
        where = f" at {path}" if path else ""
        op = f"{operator}: " if operator else ""
        super().__init__(f"{op}{message}{where}")
        self.operator = operator
        self.path = path
