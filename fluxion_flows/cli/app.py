"""The ``fluxion`` command: validate, run, list connectors, print the manifest schema.

Every user error (a :class:`FluxionError`) is printed as one message and the
command exits 2; a traceback means a bug in fluxion-flows, not in the manifest.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fluxion_flows.errors import FluxionError, ManifestError
from fluxion_flows.executor import ExecutorListener, RunResult
from fluxion_flows.manifest.loader import parse_override
from fluxion_flows.manifest.model import Manifest
from fluxion_flows.pipeline import Pipeline, register_checkpoint_store
from fluxion_flows.registry import default_registry
from fluxion_flows.spi import ConnectorKind, RunMode, StartFrom
from fluxion_flows.spi.options import OptionSchema


def _prefect_store(plan: Any) -> Any:
    """``checkpoint.store: prefect`` validates without importing Prefect; the store loads on use."""
    from fluxion_flows.prefect.store import PrefectBlockCheckpointStore

    return PrefectBlockCheckpointStore(plan.checkpoint.block)


register_checkpoint_store("prefect", _prefect_store)

app = typer.Typer(
    name="fluxion",
    help="Run Fluxion streaming manifests (source → stages → sink) as resumable pipelines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
connectors_app = typer.Typer(help="List connector providers and their options.", invoke_without_command=True)
app.add_typer(connectors_app, name="connectors")
out = Console()
err = Console(stderr=True)

ManifestArg = Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).", show_default=False)]
OperationOpt = Annotated[
    str | None, typer.Option("--operation", "-o", help="Operation to run (default: the only streaming one).")
]
ConnectionsOpt = Annotated[Path | None, typer.Option("--connections", "-c", help="Connections file.")]
TemplatesOpt = Annotated[
    Path | None, typer.Option("--templates", "-t", help="Templates file (JSON Schemas for connections).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a manifest value: path=value (repeatable).")
]
VarOpt = Annotated[
    list[str] | None, typer.Option("--var", help="Value for a {{NAME}} placeholder: NAME=value (repeatable).")
]


def main() -> None:
    """Console entry point."""
    try:
        app()
    except FluxionError as exc:
        _fail(exc)


def _fail(problem: object, code: int = 2) -> NoReturn:
    """One message, no traceback: 2 for a user error in the files or options, 1 for a failed run."""
    err.print(f"[bold red]error:[/] {escape(str(problem))}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _build(
    manifest: Path,
    operation: str | None,
    connections: Path | None,
    templates: Path | None,
    assignments: list[str] | None,
    variables: list[str] | None,
) -> Pipeline:
    overrides = dict(parse_override(a) for a in assignments or [])
    values = {}
    for item in variables or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ManifestError(f"expected NAME=value for --var, found `{item}`")
        values[name.strip()] = value
    return Pipeline.from_manifest(
        manifest,
        operation=operation,
        connections=connections,
        templates=templates,
        overrides=overrides,
        variables=values,
    )


@app.command()
def validate(
    manifest: ManifestArg,
    operation: OperationOpt = None,
    connections: ConnectionsOpt = None,
    templates: TemplatesOpt = None,
    assignments: SetOpt = None,
    variables: VarOpt = None,
) -> None:
    """Check a manifest (shape, connections, options, placeholders, stages) without connecting to anything."""
    try:
        pipeline = _build(manifest, operation, connections, templates, assignments, variables)
    except FluxionError as exc:
        _fail(exc)
    summary = pipeline.describe()
    out.print(
        f"[green]✓[/] {escape(str(manifest))}: operation [bold]{escape(pipeline.plan.operation)}[/] is valid",
        soft_wrap=True,
    )
    out.print(
        f"  {summary['source']['type']} → {len(summary['stages'])} stage(s) → "
        + ", ".join(s["type"] for s in summary["sinks"]),
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


def parse_start_from(text: str | None) -> StartFrom:
    """``checkpoint`` | ``earliest`` | ``latest`` | an ISO time or epoch seconds | JSON positions."""
    if text is None or text == "checkpoint":
        return StartFrom()
    if text in ("earliest", "latest"):
        return StartFrom(kind=text)
    if text.lstrip().startswith("{"):
        try:
            positions = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"--start-from positions are not valid JSON: {exc.msg}") from None
        return StartFrom(kind="positions", positions=positions)
    try:
        return StartFrom(kind="timestamp", timestamp=float(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ManifestError(
            f"invalid --start-from `{text}`",
            hint="use checkpoint, earliest, latest, an ISO-8601 time, epoch seconds, or JSON positions",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return StartFrom(kind="timestamp", timestamp=moment.timestamp())


class _Progress(ExecutorListener):
    """Prints a checkpoint line per commit when not attached to a terminal (logs, CI, subprocesses)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    async def on_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.quiet and not out.is_terminal:
            out.print(
                f"checkpoint generation={checkpoint['generation']} "
                f"positions={json.dumps(checkpoint['positions'])}",
                highlight=False,
            )


@app.command()
def run(
    manifest: ManifestArg,
    operation: OperationOpt = None,
    connections: ConnectionsOpt = None,
    templates: TemplatesOpt = None,
    assignments: SetOpt = None,
    variables: VarOpt = None,
    mode: Annotated[
        RunMode, typer.Option(help="continuous: until stopped; drain: up to the backlog seen at start.")
    ] = RunMode.CONTINUOUS,
    start_from: Annotated[
        str | None,
        typer.Option(
            "--start-from", help="checkpoint (default), earliest, latest, a time, or JSON positions."
        ),
    ] = None,
    max_documents: Annotated[
        int | None, typer.Option("--max-documents", help="Stop after this many documents.")
    ] = None,
    max_duration: Annotated[
        float | None, typer.Option("--max-duration", help="Stop after this many seconds.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress line.")] = False,
) -> None:
    """Run a streaming operation as a Prefect flow until its source ends, Ctrl-C, or a limit.

    Uses PREFECT_API_URL when set (or in the Prefect profile), otherwise a local Prefect API on SQLite.
    """
    from fluxion_flows.cli.flow_run import RunError, Terminated, run_flow, start_from_parameter

    try:
        pipeline = _build(manifest, operation, connections, templates, assignments, variables)
        starting = parse_start_from(start_from)
        parameters: dict[str, Any] = {
            "manifest": str(manifest),
            "operation": pipeline.plan.operation,
            "connections": str(connections) if connections else None,
            "templates": str(templates) if templates else None,
            "mode": mode,
            "overrides": dict(parse_override(a) for a in assignments or []),
            "startFrom": start_from_parameter(starting),
            "maxDocuments": max_documents,
            "maxDuration": max_duration,
            "variables": _variables(variables),
        }
        live = _Live(quiet)
        try:
            result = run_flow(
                parameters,
                listener=_Progress(quiet),
                on_executor=live.attach,
                on_signal=_interrupted,
            )
        finally:
            live.detach()
    except FluxionError as exc:
        _fail(exc)
    except RunError as exc:
        _fail(f"the run failed: {exc}; what was delivered before it is checkpointed", 1)
    except KeyboardInterrupt:
        _fail("interrupted before the pipeline started", 130)
    except Terminated:
        err.print("stopped by SIGTERM: in-flight batches delivered, final checkpoint written")
        raise SystemExit(0) from None
    _print_summary(result)


def _variables(items: list[str] | None) -> dict[str, str]:
    values = {}
    for item in items or []:
        name, _, value = item.partition("=")
        values[name.strip()] = value
    return values


def _interrupted(signum: int, count: int) -> None:
    if count == 1:
        err.print(
            "[yellow]stopping: delivering in-flight batches and writing the final checkpoint "
            "(Ctrl-C again to abandon them)[/]"
        )


class _Live:
    """The live status line, attached once the flow has created the executor."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and out.is_terminal
        self.task: asyncio.Task[None] | None = None

    def attach(self, executor: Any) -> None:
        if self.enabled:
            self.task = asyncio.get_running_loop().create_task(_live(executor.metrics.snapshot))

    def detach(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def _live(snapshot: Any) -> None:
    with out.status("starting…") as status:
        while True:
            await asyncio.sleep(0.5)
            m = snapshot()
            lag = f", lag {m['lag']:.0f}" if m.get("lag") is not None else ""
            status.update(
                f"{m['documentsIn']:,} in → {m['documentsOut']:,} out, {m['rate']:,.0f} docs/s{lag}, "
                f"{m['deadLettered']} dead-lettered, {m['checkpoints']} checkpoint(s)"
            )


def _print_summary(result: RunResult) -> None:
    m = result.metrics
    table = Table(title=f"{result.pipeline_id}: ended by {result.ended_by}", show_header=False)
    rows = [
        ("documents in", f"{m['documentsIn']:,}"),
        ("documents out", f"{m['documentsOut']:,}"),
        ("rate", f"{m['rate']:,.0f} docs/s"),
        ("retries / failures", f"{m['retries']} / {m['failures']}"),
        ("skipped / dead-lettered", f"{m['skipped']} / {m['deadLettered']}"),
        ("checkpoints", str(m["checkpoints"])),
    ]
    if result.checkpoint is not None:
        rows.append(("positions", json.dumps(result.checkpoint.positions)))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@connectors_app.callback()
def connectors_list(ctx: typer.Context) -> None:
    """Every installed source and sink provider with its options."""
    if ctx.invoked_subcommand is not None:
        return
    registry = default_registry()
    table = Table(title="Connector providers")
    for column in ("kind", "type", "name", "options", "provided by"):
        table.add_column(column)
    for kind in ConnectorKind:
        for type_id in registry.types(kind):
            entry = registry.entry(kind, type_id)
            origin = entry.distribution if entry else "built in"
            try:
                provider = registry.provider(kind, type_id)
            except FluxionError as exc:
                table.add_row(kind.value, type_id, "[red]unavailable[/]", exc.hint or str(exc), origin)
                continue
            names = ", ".join(o.name + ("*" if o.required else "") for o in provider.options().options)
            table.add_row(kind.value, type_id, provider.descriptor().display_name, names, origin)
    out.print(table)
    out.print("* required. Details: fluxion connectors show TYPE")


@connectors_app.command("show")
def connectors_show(
    type_id: Annotated[str, typer.Argument(metavar="TYPE")],
    kind: Annotated[ConnectorKind | None, typer.Option(help="source or sink (default: both).")] = None,
) -> None:
    """One provider's description and option schema."""
    registry = default_registry()
    kinds = [kind] if kind else [k for k in ConnectorKind if type_id in registry.types(k)]
    if not kinds:
        valid = sorted(set(registry.types(ConnectorKind.SOURCE)) | set(registry.types(ConnectorKind.SINK)))
        _fail(ManifestError(f"unknown connector type `{type_id}`", found=type_id, valid=valid))
    for each in kinds:
        try:
            provider = registry.provider(each, type_id)
        except FluxionError as exc:
            _fail(exc)
        descriptor = provider.descriptor()
        out.print(f"[bold]{descriptor.type}[/] ({each.value}): {descriptor.display_name}")
        if descriptor.description:
            out.print(f"  {descriptor.description}")
        out.print(_options_table(provider.options()))


def _options_table(schema: OptionSchema) -> Table:
    table = Table()
    for column in ("option", "type", "required", "default", "description"):
        table.add_column(column)
    for option in schema.options:
        default = "" if option.default is None or option.is_secret else str(option.default)
        kind = option.describe_type() + (" (secret)" if option.secret else "")
        table.add_row(option.name, kind, "yes" if option.required else "", default, option.description)
    if schema.pass_through is not None:
        table.add_row("…", "pass-through", "", "", schema.pass_through_help or "client properties")
    return table


@app.command()
def schema() -> None:
    """Print the manifest JSON Schema (point your editor's YAML/JSON schema setting at it)."""
    document = Manifest.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "Fluxion streaming manifest"
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")


def _register_prefect_commands() -> None:
    from fluxion_flows.cli import prefect_commands

    prefect_commands.register(app, out, _fail)


_register_prefect_commands()
