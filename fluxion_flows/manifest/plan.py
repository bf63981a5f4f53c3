"""From a manifest operation to a plan: which connectors with which options, which stages, where.

The plan is still declarative (no provider imported, no placeholder
resolved) but every piece carries the file and path it came from, so the
later steps (option validation, stage compilation) report errors at the
exact place the user has to edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fluxion_flows.errors import ManifestError, NotStreamingError, PathPart
from fluxion_flows.manifest import model as m
from fluxion_flows.manifest.connections import Connections, ResolvedConnection, Scope
from fluxion_flows.manifest.loader import LoadedManifest
from fluxion_flows.spi.provider import ConnectorKind

Path_ = tuple[PathPart, ...]
_BLOCK_KEYS = {"type", "connectionRef", "connectionScope", "options"}
_SINK_STRUCTURE = {"fanout", "next"}
_PIPELINE_SINK_KEYS = {"stages", "pipeline", "version", "globals"}


@dataclass(frozen=True)
class Origin:
    """Where an option value was written: file and path of the key."""

    file: str | None
    path: Path_


@dataclass
class ConnectorSpec:
    kind: ConnectorKind
    type: str
    options: dict[str, Any]
    origins: dict[str, Origin]
    file: str | None
    path: Path_
    connection: ResolvedConnection | None = None


@dataclass
class StagesSpec:
    stages: list[dict[str, Any]]
    file: str | None
    path: Path_
    globals: dict[str, Any] = field(default_factory=dict)


@dataclass
class SinkSpec:
    path: Path_
    connector: ConnectorSpec | None = None
    stages: StagesSpec | None = None
    children: list[SinkSpec] = field(default_factory=list)


@dataclass
class PipelinePlan:
    manifest: m.Manifest
    operation: str
    file: str | None
    execution_path: Path_
    source: ConnectorSpec
    process: StagesSpec | None
    sink: SinkSpec
    runtime: m.RuntimeConfig
    error_policy: m.ErrorPolicyConfig
    dead_letter: SinkSpec | None
    checkpoint: m.CheckpointConfig
    checkpoint_path: Path_ = ("checkpoint",)
    """Where the effective ``checkpoint:`` block was written (the root, or the operation's execution)."""

    @property
    def pipeline_id(self) -> str:
        return f"{self.manifest.id}.{self.operation}"


def streaming_operations(manifest: m.Manifest) -> list[str]:
    return [
        name
        for name, (_, op) in _operations(manifest).items()
        if isinstance(op.execution, m.StreamingExecution)
    ]


def _operations(manifest: m.Manifest) -> dict[str, tuple[str, m.OperationDef]]:
    """Operation name -> (operationDefs key or "", definition), resolving both reference forms."""
    found: dict[str, tuple[str, m.OperationDef]] = {}
    for name, entry in manifest.operations.items():
        if isinstance(entry, m.OperationDef):
            found[name] = ("", entry)
            continue
        key = entry if isinstance(entry, str) else entry.ref.removeprefix("#/operationDefs/")
        definition = manifest.operationDefs.get(key)
        if definition is None:
            raise ManifestError(
                f"operation `{name}` refers to a missing operationDefs entry `{key}`",
                path=("operations", name),
                found=key,
                valid=list(manifest.operationDefs),
            )
        found[name] = (key, definition)
    for key, definition in manifest.operationDefs.items():
        if not any(def_key == key for def_key, _ in found.values()):
            found[key] = (key, definition)
    return found


def build_plan(
    loaded: LoadedManifest, operation: str | None = None, connections: Connections | None = None
) -> PipelinePlan:
    manifest, file = loaded.manifest, loaded.file
    try:
        operations = _operations(manifest)
    except ManifestError as exc:
        raise exc.at(file=file) from None
    name = _select(operations, operation, file)
    def_key, definition = operations[name]
    base: Path_ = ("operationDefs", def_key, "execution") if def_key else ("operations", name, "execution")
    execution = definition.execution
    if not isinstance(execution, m.StreamingExecution):
        raise NotStreamingError(
            f"operation `{name}` is not a streaming operation (execution type `{execution.type}`); "
            "only `execution.type: streaming` runs as a pipeline",
            file=file,
            path=(*base, "type"),
            valid=streaming_operations(manifest),
        )
    builder = _Builder(manifest, file, connections or Connections(), Scope.parse(manifest.scope))
    error_policy = execution.errorPolicy or manifest.errorPolicy
    policy_path: Path_ = (*base, "errorPolicy") if execution.errorPolicy else ("errorPolicy",)
    return PipelinePlan(
        manifest=manifest,
        operation=name,
        file=file,
        execution_path=base,
        source=builder.connector(execution.source, ConnectorKind.SOURCE, (*base, "source")),
        process=builder.process(execution.process, (*base, "process")) if execution.process else None,
        sink=builder.sink(execution.sink, (*base, "sink")),
        runtime=execution.runtime or manifest.runtime,
        error_policy=error_policy,
        dead_letter=builder.sink(error_policy.sink, (*policy_path, "sink")) if error_policy.sink else None,
        checkpoint=execution.checkpoint or manifest.checkpoint,
        checkpoint_path=(*base, "checkpoint") if execution.checkpoint else ("checkpoint",),
    )


def _select(
    operations: Mapping[str, tuple[str, m.OperationDef]], wanted: str | None, file: str | None
) -> str:
    if wanted is not None:
        if wanted in operations:
            return wanted
        raise ManifestError(
            f"no operation named `{wanted}`",
            file=file,
            path=("operations",),
            found=wanted,
            valid=list(operations),
        )
    streaming = [n for n, (_, op) in operations.items() if isinstance(op.execution, m.StreamingExecution)]
    if len(streaming) == 1:
        return streaming[0]
    if not streaming:
        found = "".join(f"; `{n}` is `{op.execution.type}`" for n, (_, op) in operations.items())
        raise NotStreamingError(
            f"the manifest has no streaming operation (`execution.type: streaming`){found}",
            file=file,
            path=("operationDefs",),
        )
    raise ManifestError(
        "the manifest has several streaming operations: choose one with --operation",
        file=file,
        valid=streaming,
    )


class _Builder:
    def __init__(
        self, manifest: m.Manifest, file: str | None, connections: Connections, scope: Scope
    ) -> None:
        self.manifest = manifest
        self.file = file
        self.connections = connections
        self.scope = scope

    def _error(self, problem: str, path: Path_, **extra: Any) -> ManifestError:
        return ManifestError(problem, file=self.file, path=path, **extra)

    def connector(
        self,
        block: Mapping[str, Any],
        kind: ConnectorKind,
        path: Path_,
        extra_keys: frozenset[str] = frozenset(),
    ) -> ConnectorSpec:
        if not isinstance(block, Mapping):
            raise self._error(f"a {kind.value} must be a map with `type`", path)
        type_id = block.get("type")
        ref = block.get("connectionRef")
        resolved: ResolvedConnection | None = None
        options: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        if ref is not None:
            scope = Scope.parse(block.get("connectionScope")) if block.get("connectionScope") else self.scope
            resolved = self.connections.lookup(str(ref), scope, file=self.file, path=(*path, "connectionRef"))
            config_type = resolved.connection.config.get("type")
            type_id = type_id or config_type
            if config_type != type_id:
                raise self._error(
                    f"connectionRef `{ref}` is a `{config_type}` connection, "
                    f"but the block's type is `{type_id}`",
                    (*path, "type"),
                )
            for key, value in resolved.options.items():
                options[key] = value
                origins[key] = Origin(resolved.file, (resolved.index, "config", key))
        if not isinstance(type_id, str) or not type_id:
            raise self._error(f"missing required key `type` (the {kind.value} provider id)", (*path, "type"))
        nested = block.get("options") or {}
        if not isinstance(nested, Mapping):
            raise self._error("`options` must be a map", (*path, "options"))
        for key, value in nested.items():
            options[key] = value
            origins[key] = Origin(self.file, (*path, "options", key))
        for key, value in block.items():
            if key in _BLOCK_KEYS or key in extra_keys:
                continue
            options[key] = value
            origins[key] = Origin(self.file, (*path, key))
        return ConnectorSpec(kind, type_id, options, origins, self.file, path, resolved)

    def process(self, block: Mapping[str, Any], path: Path_) -> StagesSpec:
        kind = block.get("type", "pipeline")
        if kind == "pipelineCall":
            raise self._error(
                "`process: {type: pipelineCall}` needs a remote pipeline service, which this product "
                "does not provide; give the stages inline (`stages:`) or in the manifest's `pipelines:` map",
                (*path, "type"),
            )
        if kind != "pipeline":
            raise self._error(
                f"unknown process type `{kind}`",
                (*path, "type"),
                found=str(kind),
                valid=["pipeline", "pipelineCall"],
            )
        unknown = set(block) - {"type", *_PIPELINE_SINK_KEYS}
        if unknown:
            key = sorted(unknown)[0]
            raise self._error(
                f"unknown key `{key}`", (*path, key), found=key, valid=["type", *_PIPELINE_SINK_KEYS]
            )
        return self._stages(block, path)

    def _stages(self, block: Mapping[str, Any], path: Path_) -> StagesSpec:
        globals_ = dict(block.get("globals") or {})
        if "stages" in block:
            stages = block["stages"]
            if not isinstance(stages, list):
                raise self._error("`stages` must be a list of stage specifications", (*path, "stages"))
            return StagesSpec(stages, self.file, (*path, "stages"), globals_)
        name = block.get("pipeline")
        if not name:
            raise self._error(
                "a pipeline needs `stages:` or `pipeline:` (a name in the `pipelines:` map)", path
            )
        key, definition = self._named_pipeline(str(name), block.get("version"), path)
        if isinstance(definition, m.PipelineDef):
            return StagesSpec(
                definition.stages, self.file, ("pipelines", key, "stages"), {**definition.globals, **globals_}
            )
        return StagesSpec(definition, self.file, ("pipelines", key), globals_)

    def _named_pipeline(
        self, name: str, version: Any, path: Path_
    ) -> tuple[str, m.PipelineDef | list[dict[str, Any]]]:
        pipelines = self.manifest.pipelines
        candidates = [f"{name}@{version}"] if version is not None else [name]
        if version is None:
            candidates += sorted(k for k in pipelines if k.startswith(f"{name}@"))[-1:]
        for key in candidates:
            if key in pipelines:
                return key, pipelines[key]
        wanted = candidates[0]
        raise self._error(
            f"pipeline `{wanted}` is not defined in the manifest's `pipelines:` map",
            (*path, "pipeline"),
            found=wanted,
            valid=list(pipelines),
        )

    def sink(self, block: Mapping[str, Any] | None, path: Path_) -> SinkSpec:
        if not isinstance(block, Mapping):
            raise self._error("a sink must be a map with `type`", path)
        if block.get("type") == "pipeline":
            spec = SinkSpec(path, stages=self._stages(block, path))
            unknown = set(block) - {"type", "next", *_PIPELINE_SINK_KEYS}
            if unknown:
                key = sorted(unknown)[0]
                raise self._error(
                    f"unknown key `{key}` on a pipeline sink",
                    (*path, key),
                    found=key,
                    valid=["next", *_PIPELINE_SINK_KEYS],
                )
            spec.children = self._next(block.get("next"), (*path, "next"))
            return spec
        if "next" in block:
            this = block.get("type") or block.get("connectionRef")
            raise self._error(
                f"`next` is only valid on a sink of type `pipeline` (this sink is `{this}`); "
                "use `fanout:` to send the same batch to more sinks",
                (*path, "next"),
            )
        connector = self.connector(block, ConnectorKind.SINK, path, frozenset(_SINK_STRUCTURE))
        fanout = block.get("fanout") or []
        if not isinstance(fanout, list):
            raise self._error("`fanout` must be a list of sinks", (*path, "fanout"))
        children = [self.sink(child, (*path, "fanout", i)) for i, child in enumerate(fanout)]
        return SinkSpec(path, connector=connector, children=children)

    def _next(self, value: Any, path: Path_) -> list[SinkSpec]:
        if value is None:
            raise self._error("a pipeline sink needs `next:` (where its output goes)", path)
        if isinstance(value, Mapping) and set(value) == {"fanout"}:
            return self._next(value["fanout"], (*path, "fanout"))
        if isinstance(value, list):
            return [self.sink(item, (*path, i)) for i, item in enumerate(value)]
        return [self.sink(value, path)]
