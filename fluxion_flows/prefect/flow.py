"""The flow: one streaming manifest operation as one (long-running) Prefect flow run.

``run_manifest`` is the flow every deployment points at
(``fluxion_flows/prefect/flow.py:run_manifest``); :func:`build_flow` gives one
manifest operation its own flow name and default parameters, for
``fluxion serve`` and for Python users.

The run graph shows four task runs: ``load-manifest``, ``create-source``,
``create-sink-chain`` and ``run-pipeline`` (retried with exponential backoff,
resuming from the last checkpoint). ``mode: drain`` processes the backlog
seen at start and ends Completed, so a cron deployment is an incremental
batch job; ``continuous`` runs until cancelled or ``maxDuration``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow, flow

from fluxion_flows.prefect import secrets
from fluxion_flows.prefect.loading import build_pipeline, register_store
from fluxion_flows.prefect.names import FLOW_NAME, slug
from fluxion_flows.prefect.parameters import (
    ConnectionsParameter,
    ManifestParameter,
    RunParameters,
    StartFromParameter,
)
from fluxion_flows.prefect.tasks import create_sink_chain, create_source, load_pipeline, run_pipeline
from fluxion_flows.spi import RunMode

secrets.register()
register_store()


@flow(name=FLOW_NAME, persist_result=False, log_prints=False, validate_parameters=True)
async def run_manifest(
    manifest: ManifestParameter,
    operation: str | None = None,
    connections: ConnectionsParameter = None,
    templates: str | None = None,
    mode: RunMode = RunMode.CONTINUOUS,
    overrides: dict[str, Any] | None = None,
    startFrom: StartFromParameter | None = None,
    maxDocuments: int | None = None,
    maxDuration: float | None = None,
    variables: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one streaming operation of a Fluxion manifest (source → stages → sink chain, checkpointed).

    Args:
        manifest: A path (relative to the working directory), an http(s) URL, or the manifest object.
        operation: Which streaming operation (default: the only one).
        connections: A connections file (path or URL) or inline entries; `{"block": NAME}` loads a
            FluxionConnection block.
        templates: A templates file (JSON Schemas validating connection configs).
        mode: continuous (until cancelled or maxDuration) or drain (up to the backlog seen at start).
        overrides: Manifest values to replace, path → value (e.g. `sink.path`).
        startFrom: checkpoint (default), earliest, latest, a timestamp or positions;
            rewinding committed positions needs confirmReplay.
        maxDocuments: Stop after this many documents.
        maxDuration: Stop after this many seconds.
        variables: Values for `{{NAME}}` placeholders.
    """
    params = RunParameters(
        manifest=manifest,
        operation=operation,
        connections=connections,
        templates=templates,
        mode=mode,
        overrides=overrides or {},
        startFrom=startFrom or StartFromParameter(),
        maxDocuments=maxDocuments,
        maxDuration=maxDuration,
        variables=variables or {},
    )
    prepared = load_pipeline(params)
    prepared = await create_source(prepared)
    prepared = create_sink_chain(prepared)
    return await run_pipeline(prepared)


@dataclass
class ManifestFlow:
    """One manifest operation as a named flow plus the parameters that select it."""

    flow: Flow[..., Any]
    pipeline_id: str
    parameters: dict[str, Any] = field(default_factory=dict)
    exclusive: bool = True
    """The source needs a single consumer: deployments get concurrency limit 1."""


def build_flow(
    manifest: str | Path,
    operation: str | None = None,
    *,
    connections: str | None = None,
    mode: RunMode = RunMode.CONTINUOUS,
    overrides: dict[str, Any] | None = None,
) -> ManifestFlow:
    """Validate the manifest now (fail before deploying) and name the flow ``fluxion-<pipeline id>``."""
    params = RunParameters(
        manifest=str(manifest),
        operation=operation,
        connections=connections,
        mode=mode,
        overrides=overrides or {},
    )
    pipeline = build_pipeline(params)
    provider = pipeline.registry.source_provider(pipeline.source_config.type)
    parameters: dict[str, Any] = {
        "manifest": str(manifest),
        "operation": pipeline.plan.operation,
        "mode": mode.value,
    }
    if connections:
        parameters["connections"] = connections
    if overrides:
        parameters["overrides"] = overrides
    named = run_manifest.with_options(name=f"fluxion-{slug(pipeline.pipeline_id)}")
    return ManifestFlow(named, pipeline.pipeline_id, parameters, exclusive=not provider.shared_claims)


__all__ = ["ManifestFlow", "build_flow", "run_manifest"]
