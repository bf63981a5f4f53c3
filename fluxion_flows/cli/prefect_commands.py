"""``fluxion deploy``, ``fluxion serve`` and ``fluxion automation``: commands that talk to Prefect.

Prefect is imported inside each command, never at module import, so
``fluxion validate``, ``connectors`` and ``schema`` stay fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from fluxion_flows.manifest.loader import parse_override
from fluxion_flows.spi import RunMode

ModeOpt = Annotated[
    RunMode, typer.Option(help="continuous: until cancelled; drain: the backlog, then Completed.")
]
CronOpt = Annotated[str | None, typer.Option("--cron", help="Cron schedule, e.g. '*/15 * * * *'.")]
IntervalOpt = Annotated[float | None, typer.Option("--interval", help="Schedule every S seconds.")]
ConnectionsOpt = Annotated[
    str | None, typer.Option("--connections", "-c", help="Connections file (path or URL).")
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        help=(
            "Max parallel flow runs of the deployment (at least 1; default: no limit for a "
            "consumer-group source such as Kafka or Event Hubs, 1 for every other source). "
            "More runs than partitions sit idle."
        ),
        show_default=False,
    ),
]


def register(app: typer.Typer, out: Any, fail: Any) -> None:
    """Add the Prefect commands to ``app`` (``out``: a rich Console, ``fail``: the CLI's error exit)."""
    automation_app = typer.Typer(help="Prefect automations for Fluxion pipelines.", no_args_is_help=True)
    app.add_typer(automation_app, name="automation")

    @app.command()
    def deploy(
        manifest: Annotated[Path, typer.Argument(help="Manifest file.", show_default=False)],
        name: Annotated[str, typer.Option("--name", "-n", help="Deployment name.")],
        operation: Annotated[str | None, typer.Option("--operation", "-o")] = None,
        connections: ConnectionsOpt = None,
        mode: ModeOpt = RunMode.CONTINUOUS,
        cron: CronOpt = None,
        interval: IntervalOpt = None,
        work_pool: Annotated[
            str | None, typer.Option("--work-pool", "-p", help="Work pool to run in.")
        ] = None,
        assignments: Annotated[list[str] | None, typer.Option("--set", help="Override: path=value.")] = None,
        concurrency: ConcurrencyOpt = None,
    ) -> None:
        """Create or update a Prefect deployment running MANIFEST (parameters editable in the UI)."""
        from fluxion_flows.errors import FluxionError
        from fluxion_flows.prefect.deploy import check_concurrency_limit, deploy_manifest

        try:
            check_concurrency_limit(concurrency, "--concurrency")
        except ValueError as exc:
            fail(str(exc))  # before Prefect is contacted: a usage error costs nothing
        overrides = dict(parse_override(a) for a in assignments or [])
        try:
            deployment_id, built = asyncio.run(
                deploy_manifest(
                    manifest, name=name, operation=operation, connections=connections, mode=mode,
                    cron=cron, interval=interval, work_pool=work_pool, overrides=overrides,
                    concurrency_limit=concurrency,
                )
            )  # fmt: skip
        except FluxionError as exc:
            fail(exc)
        except ValueError as exc:
            fail(str(exc))
        out.print(f"deployment [bold]fluxion-pipeline/{name}[/] ({deployment_id}) for {built.pipeline_id}")
        limit = _limit_text(built.exclusive, concurrency)
        out.print(f"  mode {mode.value}, concurrency limit {limit}, work pool {work_pool or '(none)'}")
        out.print(f"  run it: prefect deployment run 'fluxion-pipeline/{name}'", markup=False)

    @app.command()
    def serve(
        manifests: Annotated[list[Path], typer.Argument(help="Manifest files.", show_default=False)],
        connections: ConnectionsOpt = None,
        mode: ModeOpt = RunMode.CONTINUOUS,
        cron: CronOpt = None,
        interval: IntervalOpt = None,
        limit: Annotated[int | None, typer.Option(help="Max concurrent flow runs in this process.")] = None,
    ) -> None:
        """Serve one or more manifests from this process (runs triggered from the UI or schedules)."""
        from fluxion_flows.errors import FluxionError
        from fluxion_flows.prefect.deploy import serve_manifests

        try:
            serve_manifests(
                [str(m) for m in manifests], mode=mode, cron=cron, interval=interval,
                connections=connections, limit=limit,
            )  # fmt: skip
        except FluxionError as exc:
            fail(exc)

    @automation_app.command("create")
    def automation_create(
        pipeline: Annotated[
            str | None, typer.Option(help="Pipeline id <manifest id>.<operation> (default: every pipeline).")
        ] = None,
        within: Annotated[float, typer.Option(help="Seconds without a heartbeat before it fires.")] = 120.0,
        notify: Annotated[
            str | None, typer.Option(help="Notification block document id to send the alert to.")
        ] = None,
        name: Annotated[str | None, typer.Option(help="Automation name.")] = None,
    ) -> None:
        """Create the 'heartbeat stopped' automation (alerts when a running pipeline goes silent)."""
        from fluxion_flows.prefect.automation import DEFAULT_NAME, create_heartbeat_automation

        created = asyncio.run(
            create_heartbeat_automation(
                name=name or (f"{DEFAULT_NAME} ({pipeline})" if pipeline else DEFAULT_NAME),
                pipeline_id=pipeline,
                within=within,
                notification_block_id=UUID(notify) if notify else None,
            )
        )
        out.print(
            f"automation [bold]{created.name}[/] ({created.id}): fires after {within:.0f} s without heartbeat"
        )


def _limit_text(exclusive: bool, concurrency: int | None) -> str:
    """The limit the deployment got, and why (a single-consumer source is always limited to 1)."""
    if exclusive:
        return "1 (single consumer)"
    if concurrency is None:
        return "none (consumer group)"
    return f"{concurrency} (consumer group)"


__all__ = ["register"]
