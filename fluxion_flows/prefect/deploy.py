"""``fluxion deploy`` and ``fluxion serve``: manifests as Prefect deployments.

``deploy`` creates (or updates) a deployment through Prefect's client API, no
image build and no code push: the flow is imported by module path
(``fluxion_flows.prefect.flow:run_manifest``) wherever fluxion-flows is
installed, and the run's working directory is set to the directory the
command ran in, so relative manifest and output paths mean the same thing.
The deployment's parameters are the flow's (manifest, operation, mode, ...)
and can be edited in the UI before triggering a run.

Sources that need a single consumer (everything but consumer-group sources,
which the provider declares with ``shared_claims``) get a deployment
concurrency limit of 1; the checkpoint generation fence is the last guard.

``serve`` runs one or more manifests from this process with ``prefect.serve``:
each becomes a deployment of a named flow (``fluxion-<pipeline>``), and a flow
run started from the UI or a schedule runs in a subprocess the runner can
cancel (SIGTERM → graceful stop → Cancelled).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.utilities.callables import parameter_schema

from fluxion_flows.prefect.flow import ManifestFlow, build_flow, run_manifest
from fluxion_flows.spi import RunMode

ENTRYPOINT = "fluxion_flows.prefect.flow:run_manifest"


def schedules(cron: str | None, interval: float | None) -> list[DeploymentScheduleCreate]:
    if cron and interval:
        raise ValueError("give --cron or --interval, not both")
    if cron:
        return [DeploymentScheduleCreate(schedule=CronSchedule(cron=cron), active=True)]
    if interval:
        return [
            DeploymentScheduleCreate(
                schedule=IntervalSchedule(interval=dt.timedelta(seconds=interval)), active=True
            )
        ]
    return []


def check_concurrency_limit(limit: int | None, name: str = "concurrency_limit") -> None:
    """Reject a limit below 1: Prefect would store 0 and no run could ever start."""
    if limit is not None and limit < 1:
        raise ValueError(f"{name} must be at least 1 (found {limit}); leave it out for no limit")


async def deploy_manifest(
    manifest: str | Path,
    *,
    name: str,
    operation: str | None = None,
    connections: str | None = None,
    mode: RunMode = RunMode.CONTINUOUS,
    cron: str | None = None,
    interval: float | None = None,
    work_pool: str | None = None,
    overrides: dict[str, Any] | None = None,
    working_directory: str | Path | None = None,
    concurrency_limit: int | None = None,
) -> tuple[UUID, ManifestFlow]:
    """Validate the manifest, then create or update the deployment; returns its id.

    ``concurrency_limit`` caps parallel runs of a consumer-group source (scale-out: one run per
    share of the partitions); a source that needs a single consumer is always limited to 1.
    """
    check_concurrency_limit(concurrency_limit)
    built = build_flow(manifest, operation, connections=connections, mode=mode, overrides=overrides)
    if built.exclusive and concurrency_limit not in (None, 1):
        raise ValueError(
            f"the source of {built.pipeline_id} needs a single consumer: its concurrency limit is 1"
        )
    limit = 1 if built.exclusive else concurrency_limit
    directory = os.path.abspath(working_directory or os.getcwd())  # noqa: ASYNC240 - once, no I/O
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(run_manifest.name)
        deployment_id = await client.create_deployment(
            flow_id=flow_id,
            name=name,
            schedules=schedules(cron, interval),
            concurrency_limit=limit,
            parameters=built.parameters,
            description=f"Fluxion pipeline {built.pipeline_id} ({mode.value})",
            work_pool_name=work_pool,
            tags=["fluxion", f"fluxion:{built.pipeline_id}"],
            path=directory,
            entrypoint=ENTRYPOINT,
            parameter_openapi_schema=parameter_schema(run_manifest.fn).model_dump(),
            enforce_parameter_schema=True,
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": directory}}],
        )
    return deployment_id, built


def serve_manifests(
    manifests: list[str],
    *,
    mode: RunMode = RunMode.CONTINUOUS,
    cron: str | None = None,
    interval: float | None = None,
    connections: str | None = None,
    limit: int | None = None,
) -> None:
    """Serve every manifest's (only or first) streaming operation from this process until stopped."""
    from prefect import serve

    deployments: list[Any] = []
    for manifest in manifests:
        built = build_flow(manifest, connections=connections, mode=mode)
        deployments.append(
            built.flow.to_deployment(
                name=f"{built.pipeline_id}-{mode.value}".replace(".", "-"),
                parameters=built.parameters,
                cron=cron,
                interval=interval,
                concurrency_limit=1 if built.exclusive else None,
                tags=["fluxion", f"fluxion:{built.pipeline_id}"],
            )
        )
    serve(*deployments, limit=limit)


__all__ = ["ENTRYPOINT", "check_concurrency_limit", "deploy_manifest", "schedules", "serve_manifests"]
