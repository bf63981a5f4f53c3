"""What every compiled stage shares: batch variables and runtime error wrapping.

``$$NOW`` is read once per batch call, so every document of one batch sees
the same instant (MongoDB: constant for one aggregation). Unexpected Python
exceptions raised inside an expression are turned into
:class:`StageRuntimeError` naming the stage, so the executor's error policy
handles them like any other stage failure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.base import Stage, StageRuntimeError
from fluxion_flows.stages.expressions.core import Variables

BatchFn = Callable[[list[Document], Variables], list[Document]]


def now_ms() -> dt.datetime:
    """The current time at MongoDB's millisecond precision, UTC-aware."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def batch_variables(globals_: Mapping[str, Any]) -> Variables:
    return {"NOW": now_ms(), "GLOBALS": globals_}


class CompiledStage(Stage):
    """A stateless stage: one compiled batch function."""

    def __init__(self, name: str, path: str, run: BatchFn, globals_: Mapping[str, Any]) -> None:
        super().__init__(name, path)
        self._run = run
        self._globals = globals_

    @property
    def batch_fn(self) -> BatchFn:
        """The compiled ``(docs, variables) -> docs`` function, for fusing with a neighbour."""
        return self._run

    @property
    def globals(self) -> Mapping[str, Any]:
        return self._globals

    def __call__(self, documents: list[Document]) -> list[Document]:
        return guard(self, self._run, documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        """Run inside an enclosing pipeline (``$facet``, ``$subPipeline``) sharing its variables."""
        return guard(self, self._run, documents, variables)


class FusedStage(CompiledStage):
    """Neighbouring stages run as one batch function; ``parts`` are the stages it replaces."""

    def __init__(self, parts: list[CompiledStage], run: BatchFn) -> None:
        super().__init__("+".join(part.name for part in parts), parts[0].path, run, parts[0].globals)
        self._parts: list[Stage] = list(parts)

    @property
    def parts(self) -> list[Stage]:
        return self._parts


def guard(stage: Stage, run: BatchFn, documents: list[Document], variables: Variables) -> list[Document]:
    try:
        return run(documents, variables)
    except StageRuntimeError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, ArithmeticError) as exc:
        raise StageRuntimeError(f"{type(exc).__name__}: {exc}", operator=stage.name, path=stage.path) from exc


def run_with(stage: Stage, documents: list[Document], variables: Variables) -> list[Document]:
    """Call a child stage with shared variables when it supports it."""
    apply = getattr(stage, "apply", None)
    if apply is not None:
        result: list[Document] = apply(documents, variables)
        return result
    return stage(documents)
