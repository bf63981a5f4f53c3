"""``fluxion run`` through Prefect: the same flow a deployment runs, against a local or configured API.

The manifest is validated *before* Prefect is imported, so a user error is
reported in a fraction of a second and exits 2 exactly as before. Then the
flow runs in this process: against ``PREFECT_API_URL`` when one is configured
(environment or Prefect profile), otherwise against a local Prefect API on
SQLite that this command starts and stops (see ``fluxion_flows.prefect.server``).
Prefect's own console logging is silenced: the command keeps its progress
line, Ctrl-C handling and summary table; the run's logs, events and
artifacts are in the Prefect API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fluxion_flows.checkpoint import Checkpoint
from fluxion_flows.errors import FluxionError
from fluxion_flows.executor import ExecutorListener, PipelineFailed, RunResult
from fluxion_flows.spi import RunMode, StartFrom

if TYPE_CHECKING:
    from fluxion_flows.executor import StreamingPipelineExecutor


class RunError(Exception):
    """The run failed (exit 1); the message is safe to print."""


class Terminated(Exception):
    """SIGTERM stopped the run: the pipeline stopped gracefully and wrote its final checkpoint."""


def start_from_parameter(start: StartFrom) -> dict[str, Any]:
    """A CLI ``--start-from`` as the flow parameter; typing it on the command line is the confirmation."""
    parameter: dict[str, Any] = {"kind": start.kind, "confirmReplay": True}
    if start.timestamp is not None:
        parameter["timestamp"] = dt.datetime.fromtimestamp(start.timestamp, dt.UTC).isoformat()
    if start.positions:
        parameter["positions"] = dict(start.positions)
    return parameter


def run_flow(
    parameters: dict[str, Any],
    *,
    listener: ExecutorListener | None,
    on_executor: Callable[[StreamingPipelineExecutor], None] | None,
    on_signal: Callable[[int, int], None] | None,
    on_api: Callable[[str, float], None] | None = None,
) -> RunResult:
    """Run ``run_manifest`` here; returns the executor's result (raises RunError or FluxionError)."""
    started = time.monotonic()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = None
    if not PREFECT_API_URL.value():
        from fluxion_flows.prefect.server import EmbeddedServer

        server = EmbeddedServer()
        server.start()
    try:
        from fluxion_flows.prefect.flow import run_manifest
        from fluxion_flows.prefect.tasks import LocalHooks, local_hooks

        _quiet_prefect_console()
        if server is not None:
            server.wait_ready()
        url = server.api_url if server else str(PREFECT_API_URL.value())
        if on_api:
            on_api("local" if server else url, time.monotonic() - started)
        hooks = LocalHooks(listener=listener, on_executor=on_executor, on_signal=on_signal)

        async def main() -> Any:
            local_hooks.set(hooks)
            return await run_manifest(**parameters, return_state=True)

        from prefect.exceptions import TerminationSignal

        try:
            with temporary_settings({PREFECT_API_URL: url}) if server else _nothing():
                state = asyncio.run(main())
        except TerminationSignal:  # Prefect turns SIGTERM into this after the flow stopped the pipeline
            raise Terminated() from None
    finally:
        if server is not None:
            _drain_prefect_workers()
            server.stop()
    return _result(state)


def _drain_prefect_workers() -> None:
    """Send buffered logs and events before the local API goes away (else they fail at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except Exception as exc:
            logging.getLogger("fluxion_flows.cli").debug("draining %s failed: %s", worker.__name__, exc)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _result(state: Any) -> RunResult:
    from fluxion_flows.prefect.tasks import RunFailed

    if state.is_completed():
        summary: dict[str, Any] = state.result()
        checkpoint = summary.get("checkpoint")
        return RunResult(
            summary["pipelineId"],
            summary["metrics"],
            Checkpoint.from_dict(checkpoint) if checkpoint else None,
            summary["endedBy"],
        )
    try:
        state.result(raise_on_failure=True)
    except FluxionError:
        raise
    except (RunFailed, PipelineFailed, OSError) as exc:
        raise RunError(str(exc)) from None
    except Exception as exc:
        raise RunError(f"{type(exc).__name__}: {exc}") from None
    raise RunError(f"the flow run ended {state.type.value.lower()}: {state.message or ''}".strip())


def _quiet_prefect_console() -> None:
    """Keep Prefect's console handler off the terminal (its records still reach the API handler)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if os.environ.get("FLUXION_PREFECT_CONSOLE"):
        return
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "uvicorn", "fastapi"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL + 1)


__all__ = ["RunError", "RunMode", "Terminated", "run_flow", "start_from_parameter"]
