"""Turning a plan into running objects: configured connectors, compiled stages, an executor.

This is the one place that knows the whole path manifest → registry →
source → executor (stages) → sink chain → checkpoint. The CLI and the Prefect
flow both go through it; each step is a separate method so the Prefect flow
can show them as separate tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxion_flows.checkpoint import Checkpoint, CheckpointStore, FileCheckpointStore, MemoryCheckpointStore
from fluxion_flows.errors import FluxionError, ManifestError, OptionError
from fluxion_flows.executor import (
    CheckpointOptions,
    ErrorPolicy,
    ExecutorListener,
    PolicyKind,
    RuntimeOptions,
    SinkNode,
    StreamingPipelineExecutor,
)
from fluxion_flows.manifest.connections import Connections
from fluxion_flows.manifest.loader import LoadedManifest, load_manifest
from fluxion_flows.manifest.placeholders import Resolver, placeholders_in
from fluxion_flows.manifest.plan import ConnectorSpec, PipelinePlan, SinkSpec, StagesSpec, build_plan
from fluxion_flows.registry import ProviderRegistry, default_registry
from fluxion_flows.spi import (
    ConnectorConfig,
    RunMode,
    Secret,
    SinkContext,
    SourceContext,
    StartFrom,
    StreamingSink,
    StreamingSource,
)
from fluxion_flows.stages import Stage, compile_pipeline

StoreFactory = Callable[[PipelinePlan], CheckpointStore]
_STORES: dict[str, StoreFactory] = {
    "memory": lambda plan: MemoryCheckpointStore(),
    "file": lambda plan: FileCheckpointStore(Path(plan.checkpoint.directory)),
}


def register_checkpoint_store(name: str, factory: StoreFactory) -> None:
    """Make ``checkpoint.store: <name>`` available (the Prefect integration registers ``prefect``)."""
    _STORES[name] = factory


@dataclass
class ConfiguredSink:
    spec: SinkSpec
    config: ConnectorConfig | None
    stages: list[Stage]
    children: list[ConfiguredSink]


@dataclass
class Pipeline:
    """A validated, configured pipeline: everything but open connections."""

    plan: PipelinePlan
    registry: ProviderRegistry
    source_config: ConnectorConfig
    stages: list[Stage]
    sink: ConfiguredSink
    dead_letter: ConfiguredSink | None
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def pipeline_id(self) -> str:
        return self.plan.pipeline_id

    # ------------------------------------------------------------------ build
    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path | Mapping[str, Any] | LoadedManifest,
        *,
        operation: str | None = None,
        connections: str | Path | Connections | None = None,
        templates: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        variables: Mapping[str, str] | None = None,
        registry: ProviderRegistry | None = None,
    ) -> Pipeline:
        """Load, plan and validate (options typed, placeholders resolvable, stages compiled)."""
        loaded = (
            manifest
            if isinstance(manifest, LoadedManifest)
            else load_manifest(manifest, overrides=overrides, operation=operation)
        )
        if not isinstance(connections, Connections):
            connections = Connections.load(connections, templates)
        plan = build_plan(loaded, operation, connections)
        return cls.from_plan(plan, connections, registry=registry, variables=variables)

    @classmethod
    def from_plan(
        cls,
        plan: PipelinePlan,
        connections: Connections,
        *,
        registry: ProviderRegistry | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Pipeline:
        registry = registry or default_registry()
        configurer = _Configurer(registry, connections, Resolver(variables), plan.runtime.allowFunctions)
        _check_store(plan)
        return cls(
            plan=plan,
            registry=registry,
            source_config=configurer.connector(plan.source),
            stages=configurer.stages(plan.process) if plan.process else [],
            sink=configurer.sink(plan.sink),
            dead_letter=configurer.sink(plan.dead_letter) if plan.dead_letter else None,
            variables=dict(variables or {}),
        )

    # ------------------------------------------------------------------ runtime
    def open_store(self) -> CheckpointStore:
        return _STORES[self.plan.checkpoint.store](self.plan)

    def source_context(
        self, checkpoint: Checkpoint, mode: RunMode = RunMode.CONTINUOUS, start_from: StartFrom | None = None
    ) -> SourceContext:
        return SourceContext(
            pipeline_id=self.pipeline_id,
            positions=dict(checkpoint.positions),
            start_from=start_from or StartFrom(),
            mode=mode,
        )

    def create_source(
        self, checkpoint: Checkpoint, mode: RunMode = RunMode.CONTINUOUS, start_from: StartFrom | None = None
    ) -> StreamingSource:
        return self.create_source_for(self.source_context(checkpoint, mode, start_from))

    def create_source_for(self, context: SourceContext) -> StreamingSource:
        """The source for a context the caller keeps (to wire ``request_checkpoint`` to its executor)."""
        try:
            return self.registry.create_source(context, self.source_config)
        except FluxionError as exc:
            raise exc.at(file=self.plan.file) from None

    def create_sink_chain(self) -> SinkNode:
        return self._node(self.sink)

    def create_dead_letter_sink(self) -> StreamingSink | None:
        if self.dead_letter is None:
            return None
        node = self._node(self.dead_letter)
        if node.sink is None or node.children:
            raise ManifestError(
                "a dead-letter sink must be a plain sink (no stages, next or fanout)", file=self.plan.file
            )
        return node.sink

    def _node(self, configured: ConfiguredSink) -> SinkNode:
        path = ".".join(str(p) for p in configured.spec.path)
        sink = None
        if configured.config is not None:
            sink = self.registry.create_sink(SinkContext(self.pipeline_id, path), configured.config)
        return SinkNode(
            path=path,
            sink=sink,
            type=configured.config.type if configured.config else "pipeline",
            stages=configured.stages,
            children=[self._node(child) for child in configured.children],
        )

    def runtime_options(
        self, max_documents: int | None = None, max_duration: float | None = None
    ) -> RuntimeOptions:
        r = self.plan.runtime
        return RuntimeOptions(
            micro_batch_size=r.microBatchSize,
            queue_capacity=r.queueCapacity,
            source_queue_capacity=r.sourceQueueCapacity,
            worker_thread_pool_size=r.workerThreadPoolSize,
            direct_handoff=r.directHandoff,
            max_batch_wait=r.maxBatchWait,
            max_documents=max_documents,
            max_duration=max_duration,
            observe_interval=r.metricsInterval,
            stop_timeout=r.stopTimeout,
        )

    def error_policy(self) -> ErrorPolicy:
        p = self.plan.error_policy
        return ErrorPolicy(
            kind=PolicyKind(p.policy),
            max_retries=p.maxRetries,
            initial_backoff=p.initialBackoff,
            max_backoff=p.maxBackoff,
            multiplier=p.multiplier,
            jitter=p.jitter,
            then=PolicyKind(p.then),
            dead_letter=self.create_dead_letter_sink(),
        )

    def checkpoint_options(self) -> CheckpointOptions:
        c = self.plan.checkpoint
        return CheckpointOptions(interval=c.interval, every_documents=c.everyDocuments)

    async def executor(
        self,
        *,
        mode: RunMode = RunMode.CONTINUOUS,
        start_from: StartFrom | None = None,
        store: CheckpointStore | None = None,
        listener: ExecutorListener | None = None,
        max_documents: int | None = None,
        max_duration: float | None = None,
    ) -> StreamingPipelineExecutor:
        """Claim the checkpoint, create source and sinks, and wire the executor (not yet running)."""
        store = store or self.open_store()
        shared = self.registry.source_provider(self.source_config.type).shared_claims
        claimed = await store.claim(self.pipeline_id, shared=shared)
        context = self.source_context(claimed, mode, start_from)
        executor = StreamingPipelineExecutor(
            self.pipeline_id,
            self.create_source_for(context),
            self.create_sink_chain(),
            self.stages,
            runtime=self.runtime_options(max_documents, max_duration),
            error_policy=self.error_policy(),
            checkpoint=self.checkpoint_options(),
            store=store,
            claimed=claimed,
            listener=listener,
        )
        context.request_checkpoint = executor.checkpoint_now
        return executor

    def describe(self) -> dict[str, Any]:
        """A secret-free summary for logs, artifacts and ``fluxion validate``."""
        return {
            "pipelineId": self.pipeline_id,
            "source": self.source_config.redacted(),
            "stages": [part.name for s in self.stages for part in s.parts],
            "sinks": [c.config.redacted() for c in _walk(self.sink) if c.config is not None],
            "deadLetter": self.dead_letter.config.redacted()
            if self.dead_letter and self.dead_letter.config
            else None,
            "checkpoint": self.plan.checkpoint.model_dump(),
        }


def _walk(node: ConfiguredSink) -> list[ConfiguredSink]:
    return [node, *[n for child in node.children for n in _walk(child)]]


def _check_store(plan: PipelinePlan) -> None:
    if plan.checkpoint.store not in _STORES:
        raise ManifestError(
            f"unknown checkpoint store `{plan.checkpoint.store}`",
            file=plan.file,
            path=(*plan.checkpoint_path, "store"),
            found=plan.checkpoint.store,
            valid=list(_STORES),
        )


class _Configurer:
    """Validates connector options and compiles stages, anchoring every error at its origin."""

    def __init__(
        self, registry: ProviderRegistry, connections: Connections, resolver: Resolver, allow_functions: bool
    ) -> None:
        self.registry = registry
        self.connections = connections
        self.resolver = resolver
        self.allow_functions = allow_functions

    def connector(self, spec: ConnectorSpec) -> ConnectorConfig:
        resolved: dict[str, Any] = {}
        for key, value in spec.options.items():
            origin = spec.origins[key]
            resolved[key] = self.resolver.resolve(value, file=origin.file, path=origin.path)
        if spec.connection is not None:
            config_part = {k: resolved[k] for k in spec.connection.options if k in resolved}
            substituted = {k for k in config_part if placeholders_in(spec.options[k])}
            self.connections.validate_config(
                spec.connection, config_part, spec.kind.value, substituted=substituted
            )
            for key in spec.connection.secret_keys & resolved.keys():
                if isinstance(resolved[key], str):
                    resolved[key] = Secret(resolved[key])
        try:
            return self.registry.configure(spec.kind, spec.type, resolved, file=spec.file, path=spec.path)
        except OptionError as exc:
            raise _reanchor(exc, spec) from None

    def stages(self, spec: StagesSpec) -> list[Stage]:
        return compile_pipeline(
            spec.stages,
            file=spec.file,
            path=spec.path,
            globals=spec.globals,
            allow_functions=self.allow_functions,
        )

    def sink(self, spec: SinkSpec) -> ConfiguredSink:
        return ConfiguredSink(
            spec=spec,
            config=self.connector(spec.connector) if spec.connector else None,
            stages=self.stages(spec.stages) if spec.stages else [],
            children=[self.sink(child) for child in spec.children],
        )


def _reanchor(error: OptionError, spec: ConnectorSpec) -> OptionError:
    """Point an option error at the line the user wrote (inline, under options:, or in the connection)."""
    relative = error.path[len(spec.path) :] if error.path[: len(spec.path)] == spec.path else error.path
    key = relative[0] if relative else None
    origin = spec.origins.get(str(key)) if key is not None else None
    if origin is not None:
        error.file = origin.file
        error.path = (*origin.path, *relative[1:])
        error.args = (error._render(),)
    return error


__all__ = ["ConfiguredSink", "Pipeline", "register_checkpoint_store"]
