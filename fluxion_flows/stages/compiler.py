"""``compile_pipeline``: validate stage specs once and build the executor's Stage objects.

Every stage spec is a one-key object ``{$stage: argument}``. Errors name the
file and the manifest path of the offending stage or operator, with a
did-you-mean for near-miss names. Stage builders live in one module per
concept (``transform``, ``batch``, ``group``, ``windows``, ``subpipeline``);
this module only dispatches.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fluxion_flows.errors import PathPart, StageError, format_path
from fluxion_flows.stages import batch, group, sampling, subpipeline, transform, windows
from fluxion_flows.stages.base import Stage, spec_digest
from fluxion_flows.stages.expressions import Ctx
from fluxion_flows.stages.runtime import BatchFn, CompiledStage, FusedStage


@dataclass(frozen=True)
class Options:
    """Run-level settings that affect compilation."""

    allow_functions: bool = False
    max_keys: int | None = None
    globals: Mapping[str, Any] | None = None


StageBuilder = Callable[[Any, Ctx, str, Options], Stage]

RESERVED = ("$merge", "$out", "$search", "$vectorSearch", "$graphLookup")
NOT_YET = ("$httpCall", "$sqlQuery", "$enrich", "$agentCall")
NOT_STREAMING = (
    "$lookup",
    "$unionWith",
    "$geoNear",
    "$collStats",
    "$indexStats",
    "$currentOp",
    "$changeStream",
)


def _stateless(make: Callable[[Any, Ctx], BatchFn]) -> StageBuilder:
    def build(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
        return CompiledStage(name, ctx.where, make(spec, ctx), options.globals or {})

    return build


def _named(make: Callable[[Any, Ctx, str], BatchFn]) -> StageBuilder:
    def build(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
        return CompiledStage(name, ctx.where, make(spec, ctx, name), options.globals or {})

    return build


def _per_batch(make: Callable[[Any, Ctx], BatchFn]) -> StageBuilder:
    return _stateless(make)


def _group(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
    return group.build_group(spec, ctx, name, options.max_keys, options.globals or {})


def _windows(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
    return windows.build_set_window_fields(spec, ctx, name, options.max_keys, options.globals or {})


def _sample_rate(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
    return sampling.build_sample_rate(spec, ctx, name)


def _nested(kind: str) -> StageBuilder:
    def build(spec: Any, ctx: Ctx, name: str, options: Options) -> Stage:
        def compile_child(specs: Any, child_ctx: Ctx) -> list[Stage]:
            return compile_stages(specs, child_ctx, options)

        make = subpipeline.build_facet if kind == "facet" else subpipeline.build_sub_pipeline
        return make(spec, ctx, name, compile_child, options.globals or {})

    return build


STAGES: dict[str, StageBuilder] = {
    "$match": _stateless(transform.match),
    "$set": _named(transform.set_fields),
    "$addFields": _named(transform.set_fields),
    "$project": _stateless(transform.project),
    "$unset": _stateless(transform.unset),
    "$replaceRoot": _named(transform.replace_root),
    "$replaceWith": _named(transform.replace_root),
    "$unwind": _stateless(transform.unwind),
    "$sampleRate": _sample_rate,
    "$facet": _nested("facet"),
    "$subPipeline": _nested("subPipeline"),
    "$group": _group,
    "$setWindowFields": _windows,
    "$limit": _per_batch(batch.limit),
    "$skip": _per_batch(batch.skip),
    "$sort": _per_batch(batch.sort),
    "$sortByCount": _per_batch(batch.sort_by_count),
    "$count": _per_batch(batch.count),
    "$bucket": _per_batch(batch.bucket),
    "$bucketAuto": _per_batch(batch.bucket_auto),
    "$densify": _per_batch(batch.densify),
    "$fill": _per_batch(batch.fill),
}


def register_stage(name: str, builder: StageBuilder) -> None:
    STAGES[name] = builder


def compile_stage(spec: Any, ctx: Ctx, options: Options) -> Stage:
    """Compile one ``{$stage: argument}`` at ``ctx.path``."""
    if not isinstance(spec, dict) or len(spec) != 1:
        keys = ", ".join(map(str, spec)) if isinstance(spec, dict) else type(spec).__name__
        raise ctx.error(f"a stage must be an object with exactly one `$stage` key, found {keys or 'nothing'}")
    name, argument = next(iter(spec.items()))
    stage_ctx = ctx.at(name)
    if name in RESERVED:
        raise stage_ctx.error(
            f"stage `{name}` is reserved and not supported in streaming pipelines",
            hint="deliver results through the operation's sink instead",
        )
    if name in NOT_YET:
        raise stage_ctx.error(
            f"`{name}` is not available yet in fluxion-flows", hint="it is planned for a later release"
        )
    if name in NOT_STREAMING:
        raise stage_ctx.error(f"stage `{name}` is not supported in streaming pipelines")
    builder = STAGES.get(name)
    if builder is None:
        close = difflib.get_close_matches(str(name), list(STAGES), n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"valid stages: {', '.join(sorted(STAGES))}"
        raise stage_ctx.error(f"unknown stage `{name}`", hint=hint)
    _check_keys(argument, stage_ctx)
    stage = builder(argument, stage_ctx, name, options)
    stage.path = format_path(ctx.path)
    stage.spec_digest = spec_digest(spec)
    return stage


def _check_keys(value: Any, ctx: Ctx) -> None:
    """Field names and operators are strings; YAML also allows ``0:`` or ``null:`` as keys, rejected here."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ctx.at(str(key)).error(
                    f"`{key}` is not a valid field name or operator (keys must be strings; quote it in YAML)"
                )
            _check_keys(item, ctx.at(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_keys(item, ctx.at(index))


def compile_stages(specs: Any, ctx: Ctx, options: Options) -> list[Stage]:
    """Compile a list of stage specs whose manifest path is ``ctx.path``."""
    if not isinstance(specs, list):
        raise ctx.error("stages must be a list of {$stage: argument} objects")
    stages = [compile_stage(spec, ctx.at(i), options) for i, spec in enumerate(specs)]
    return _fuse(specs, stages, ctx)


FUSABLE = {("$set", "$project"), ("$addFields", "$project")}


def _fuse(specs: list[Any], stages: list[Stage], ctx: Ctx) -> list[Stage]:
    """Run ``$set`` + ``$project`` pairs as one stage (operator chaining, as stream engines do).

    Each stage was compiled (and validated) on its own first, so errors are
    unchanged; the pair then runs as one loop without copying every document
    (:func:`transform.set_then_project`). The fused stage keeps the first
    stage's path and is named ``$set+$project`` in metrics.
    """
    fused: list[Stage] = []
    i = 0
    while i < len(stages):
        pair = _fuse_pair(specs, stages, ctx, i) if i + 1 < len(stages) else None
        fused.append(pair or stages[i])
        i += 2 if pair else 1
    return fused


def _fuse_pair(specs: list[Any], stages: list[Stage], ctx: Ctx, i: int) -> Stage | None:
    (first_name, first_spec), (second_name, second_spec) = (next(iter(specs[j].items())) for j in (i, i + 1))
    first, second = stages[i], stages[i + 1]
    if (first_name, second_name) not in FUSABLE:
        return None
    if not isinstance(first, CompiledStage) or not isinstance(second, CompiledStage):
        return None
    run = transform.set_then_project(
        first_spec,
        ctx.at(i, first_name),
        second_spec,
        ctx.at(i + 1, second_name),
        [first.batch_fn, second.batch_fn],
    )
    if run is None:
        return None
    return FusedStage([first, second], run)


def compile_pipeline(
    specs: list[dict[str, Any]],
    *,
    file: str | None = None,
    path: tuple[PathPart, ...] = (),
    globals: dict[str, Any] | None = None,
    allow_functions: bool = False,
    max_keys: int | None = None,
) -> list[Stage]:
    """Validate and compile a pipeline; the executor calls each returned Stage once per micro-batch.

    ``path`` is the manifest path of the stages list, so an error in the third
    stage reads ``file: pipelines.orders@1.stages[2].$set.net: ...``.
    """
    if max_keys is not None and (not isinstance(max_keys, int) or max_keys < 1):
        raise StageError("max_keys must be a positive integer", file=file, path=path)
    ctx = Ctx(file=file, path=tuple(path), allow_functions=allow_functions, globals=dict(globals or {}))
    return compile_stages(specs, ctx, Options(allow_functions, max_keys, dict(globals or {})))
