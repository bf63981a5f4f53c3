"""Nested pipelines: ``$facet`` (per event) and Fluxion's ``$subPipeline``.

``$facet`` is stream-safe because it runs its sub-pipelines on each event on
its own: every input document yields one output document
``{facetName: [results of that pipeline on [doc]]}``.

``$subPipeline`` runs ``steps`` (stages, in order) on the batch, then, if
given, ``branches`` in parallel on the result of the steps, merged by
``merge``: ``concat`` (branch outputs one after the other), ``zip`` (the i-th
documents of every branch merged into one, as long as the shortest branch) or
``facet`` (one document ``{branchName: [docs]}`` per batch). A branch with
``onError: skip`` contributes nothing when it fails; ``bubble`` (default)
fails the stage. State of stateful children is checkpointed with the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.base import Stage, StageRuntimeError
from fluxion_flows.stages.expressions.core import Ctx, Variables
from fluxion_flows.stages.runtime import batch_variables, run_with

CompileStages = Callable[[Any, Ctx], list[Stage]]
MERGES = ("concat", "zip", "facet")
_FORBIDDEN_IN_FACET = ("$facet",)


def run_stages(stages: list[Stage], documents: list[Document], variables: Variables) -> list[Document]:
    for stage in stages:
        documents = run_with(stage, documents, variables)
    return documents


class NestedStage(Stage):
    """A stage made of child pipelines; its state is the list of its children's states."""

    def __init__(
        self, name: str, path: str, pipelines: list[list[Stage]], globals_: Mapping[str, Any]
    ) -> None:
        super().__init__(name, path)
        self._pipelines = pipelines
        self._globals = globals_
        self.stateful = any(s.stateful for p in pipelines for s in p)

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self.apply(documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        raise NotImplementedError

    def snapshot(self) -> Any:
        if not self.stateful:
            return None
        return [[stage.snapshot() for stage in pipeline] for pipeline in self._pipelines]

    def restore(self, state: Any) -> None:
        if not state:
            return
        for pipeline, saved in zip(self._pipelines, state, strict=True):
            for stage, stage_state in zip(pipeline, saved, strict=True):
                stage.restore(stage_state)

    def state_size(self) -> int:
        return sum(stage.state_size() for pipeline in self._pipelines for stage in pipeline)


class FacetStage(NestedStage):
    def __init__(
        self, name: str, path: str, facets: dict[str, list[Stage]], globals_: Mapping[str, Any]
    ) -> None:
        super().__init__(name, path, list(facets.values()), globals_)
        self._names = list(facets)

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        return [
            {
                name: run_stages(pipeline, [doc], variables)
                for name, pipeline in zip(self._names, self._pipelines, strict=True)
            }
            for doc in documents
        ]


def build_facet(
    spec: Any, ctx: Ctx, name: str, compile_stages: CompileStages, globals_: Mapping[str, Any]
) -> Stage:
    if not isinstance(spec, dict) or not spec:
        raise ctx.error("$facet takes an object of name: [stages]")
    facets: dict[str, list[Stage]] = {}
    for facet_name, stages in spec.items():
        if (
            not isinstance(facet_name, str)
            or not facet_name
            or facet_name.startswith("$")
            or "." in facet_name
        ):
            raise ctx.error(f"invalid $facet output name `{facet_name}`")
        for i, stage in enumerate(stages if isinstance(stages, list) else []):
            if isinstance(stage, dict) and any(k in _FORBIDDEN_IN_FACET for k in stage):
                raise ctx.at(facet_name, i).error("$facet cannot be nested inside $facet")
        facets[facet_name] = compile_stages(stages, ctx.at(facet_name))
    return FacetStage(name, ctx.where, facets, globals_)


class SubPipelineStage(NestedStage):
    def __init__(
        self,
        name: str,
        path: str,
        steps: list[Stage],
        branches: list[tuple[str, list[Stage], str]],
        merge: str,
        globals_: Mapping[str, Any],
    ) -> None:
        super().__init__(name, path, [steps] + [b[1] for b in branches], globals_)
        self._steps = steps
        self._branches = branches
        self._merge = merge

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        documents = run_stages(self._steps, documents, variables)
        if not self._branches:
            return documents
        outputs: list[tuple[str, list[Document]]] = []
        for branch_name, stages, on_error in self._branches:
            try:
                outputs.append((branch_name, run_stages(stages, list(documents), variables)))
            except StageRuntimeError:
                if on_error == "bubble":
                    raise
        return self._merged(outputs)

    def _merged(self, outputs: list[tuple[str, list[Document]]]) -> list[Document]:
        if self._merge == "facet":
            produced = dict(outputs)
            return [{name: produced.get(name, []) for name, _, _ in self._branches}]
        if self._merge == "zip":
            if not outputs:
                return []
            length = min(len(docs) for _, docs in outputs)
            zipped = []
            for i in range(length):
                merged: Document = {}
                for _, docs in outputs:
                    merged.update(docs[i])
                zipped.append(merged)
            return zipped
        return [doc for _, docs in outputs for doc in docs]


def build_sub_pipeline(
    spec: Any, ctx: Ctx, name: str, compile_stages: CompileStages, globals_: Mapping[str, Any]
) -> Stage:
    allowed = ("steps", "branches", "merge")
    if not isinstance(spec, dict) or not ({"steps", "branches"} & set(spec)):
        raise ctx.error("$subPipeline takes {steps: [stages], branches: [{name, pipeline, onError}], merge}")
    for key in spec:
        if key not in allowed:
            raise ctx.at(key).error(f"unknown $subPipeline option `{key}`", found=str(key), valid=allowed)
    steps_spec = spec.get("steps", [])
    if not isinstance(steps_spec, list):
        raise ctx.at("steps").error("steps must be a list of stages")
    flat: list[tuple[int, Any]] = []
    for i, step in enumerate(steps_spec):
        flat.extend((i, s) for s in (step if isinstance(step, list) else [step]))
    steps = [compile_stages([s], ctx.at("steps", i))[0] for i, s in flat]
    merge = spec.get("merge", "concat")
    if merge not in MERGES:
        raise ctx.at("merge").error(f"unknown merge `{merge}`", found=str(merge), valid=MERGES)
    branches: list[tuple[str, list[Stage], str]] = []
    raw_branches = spec.get("branches", [])
    if not isinstance(raw_branches, list):
        raise ctx.at("branches").error("branches must be a list of {name, pipeline, onError}")
    for i, branch in enumerate(raw_branches):
        bctx = ctx.at("branches", i)
        if not isinstance(branch, dict) or "pipeline" not in branch:
            raise bctx.error("a branch is {name, pipeline: [stages], onError: skip | bubble}")
        for key in branch:
            if key not in ("name", "pipeline", "onError"):
                raise bctx.at(key).error(
                    f"unknown branch option `{key}`", found=str(key), valid=["name", "pipeline", "onError"]
                )
        on_error = branch.get("onError", "bubble")
        if on_error not in ("skip", "bubble"):
            raise bctx.at("onError").error(
                "onError must be skip or bubble", found=str(on_error), valid=["skip", "bubble"]
            )
        branch_name = str(branch.get("name", f"branch{i}"))
        branches.append((branch_name, compile_stages(branch["pipeline"], bctx.at("pipeline")), on_error))
    return SubPipelineStage(name, ctx.where, steps, branches, merge, globals_)
