"""The flow's tasks: load and validate, create the source, create the sink chain, run the executor loop.

Four task runs per flow run, whatever the volume: records and batches never
become task runs (they would leak memory in an endless loop and spend Cloud
rate limits). Sources, sinks and the pipeline are live objects, so every task
has ``persist_result=False`` and ``NO_CACHE``; they travel between tasks in a
:class:`PreparedRun`, a plain object Prefect does not try to walk or hash.

The loop task retries with exponential backoff. A retry builds everything
afresh (pipeline, stages, source, sinks) and claims the checkpoint again, so it
resumes from the last committed checkpoint; deterministic failures (a user
error, a stage error, a record that cannot be decoded, a sink's
``NonRetryableError``, being fenced by a newer run) are not retried.

Cancellation. Prefect cancels a run by recording a "cancel" intent and
sending SIGTERM; its handler (which must stay installed: the intent is only
acknowledged while it is) raises ``TerminationSignal``, a BaseException,
wherever the main thread happens to be. So the executor runs on its own event
loop in a worker thread, where no signal can interrupt it mid-batch: when
``TerminationSignal`` (or a cancellation of this task) reaches the flow's
thread, :func:`_run_isolated` calls ``executor.stop()`` on the executor's
loop (stop reading, deliver in-flight batches, write the final checkpoint,
close connectors), waits for it in ``finally``, then lets the signal go on so
Prefect records Cancelled. The final checkpoint therefore covers exactly what
reached the sink. SIGINT (``fluxion run``'s Ctrl-C) stops the same way and
the run completes; a second Ctrl-C abandons in-flight work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import AsyncClientContext, FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger
from prefect.tasks import Task, exponential_backoff

from fluxion_flows.checkpoint import Checkpoint, CheckpointStore, StaleGenerationError
from fluxion_flows.errors import FluxionError
from fluxion_flows.executor import (
    ErrorPolicy,
    ExecutorListener,
    PipelineFailed,
    RunResult,
    SinkNode,
    Step,
    StreamingPipelineExecutor,
)
from fluxion_flows.pipeline import ConfiguredSink, Pipeline
from fluxion_flows.prefect.loading import build_pipeline
from fluxion_flows.prefect.observability import PrefectObserver, Scrubber
from fluxion_flows.prefect.parameters import RunParameters
from fluxion_flows.spi import ConnectorConfig, NonRetryableError, SourceContext, StartFrom, StreamingSource

RETRIES = 3
RETRY_BACKOFF = 2.0


class ReplayNotConfirmed(FluxionError):
    """A start that rewinds committed positions was asked for without ``confirmReplay``."""


class RunFailed(Exception):
    """A failed run, its message scrubbed of secrets; ``retryable`` says whether a retry can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class LocalHooks:
    """In-process hooks for the ``fluxion run`` command (progress line, Ctrl-C messages)."""

    listener: ExecutorListener | None = None
    on_executor: Callable[[StreamingPipelineExecutor], None] | None = None
    on_signal: Callable[[int, int], None] | None = None


local_hooks: ContextVar[LocalHooks | None] = ContextVar("fluxion_local_hooks", default=None)


class PreparedRun:
    """Live objects shared by one flow run's tasks (deliberately not a dataclass: Prefect won't walk it)."""

    def __init__(self, params: RunParameters, pipeline: Pipeline) -> None:
        self.params = params
        self.pipeline = pipeline
        self.store: CheckpointStore = pipeline.open_store()
        self.start_from: StartFrom = params.startFrom.to_start_from()
        self.claimed: Checkpoint | None = None
        self.source: StreamingSource | None = None
        self.source_context: SourceContext | None = None
        self.sinks: SinkNode | None = None
        self.error_policy: ErrorPolicy | None = None
        self.attempts = 0
        self.scrubber = Scrubber(_configs(pipeline))

    @property
    def pipeline_id(self) -> str:
        return self.pipeline.pipeline_id


def _configs(pipeline: Pipeline) -> list[ConnectorConfig | None]:
    def walk(node: ConfiguredSink | None) -> Iterator[ConnectorConfig | None]:
        if node is not None:
            yield node.config
            for child in node.children:
                yield from walk(child)

    return [pipeline.source_config, *walk(pipeline.sink), *walk(pipeline.dead_letter)]


_TASK: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


@task(name="load-manifest", **_TASK)
def load_pipeline(params: RunParameters) -> PreparedRun:
    """Load and validate the manifest: shapes, connections, options, placeholders, stages."""
    run = PreparedRun(params, build_pipeline(params))
    get_run_logger().info("pipeline %s validated: %s", run.pipeline_id, _shape(run.pipeline))
    return run


@task(name="create-source", **_TASK)
async def create_source(run: PreparedRun) -> PreparedRun:
    """Check a replay was confirmed, claim the checkpoint (new generation), create the source."""
    await _check_replay(run)
    await _claim_and_open_source(run)
    get_run_logger().info(
        "claimed checkpoint generation %s at %s",
        run.claimed.generation if run.claimed else "?",
        _positions(run),
    )
    return run


@task(name="create-sink-chain", **_TASK)
def create_sink_chain(run: PreparedRun) -> PreparedRun:
    """Create the sink chain (with its stages, next and fanout) and the dead-letter sink."""
    run.sinks = run.pipeline.create_sink_chain()
    run.error_policy = run.pipeline.error_policy()
    return run


def _worth_retrying(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    error = state.data
    return not isinstance(error, RunFailed) or error.retryable


@task(
    name="run-pipeline",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BACKOFF),
    retry_condition_fn=_worth_retrying,
    **_TASK,
)
async def run_pipeline(run: PreparedRun) -> dict[str, Any]:
    """Run the executor until end of stream, a limit, cancellation or failure; returns the run summary."""
    run.attempts += 1
    if run.attempts > 1:
        await _fresh_attempt(run)
    executor = _executor(run)
    hooks = local_hooks.get()
    if hooks and hooks.on_executor:
        hooks.on_executor(executor)
    try:
        try:
            result = await _run_isolated(executor, hooks)
        finally:
            if executor.metrics.checkpoints:
                run.start_from = StartFrom()  # it committed: a retry resumes there, not at a replay start
    except (StaleGenerationError, FluxionError) as exc:  # a retry cannot fix either
        raise RunFailed(run.scrubber.text(str(exc)), retryable=False) from None
    except PipelineFailed as exc:
        raise RunFailed(run.scrubber.text(str(exc)), retryable=_transient(exc)) from None
    checkpoint = result.checkpoint
    return {
        "pipelineId": result.pipeline_id,
        "endedBy": result.ended_by,
        "metrics": result.metrics,
        "checkpoint": {k: v for k, v in checkpoint.to_dict().items() if k != "stageState"}
        if checkpoint
        else None,
    }


# ---------------------------------------------------------------- helpers
async def _check_replay(run: PreparedRun) -> None:
    start = run.params.startFrom
    if not start.rewinds or start.confirmReplay:
        return
    stored = await run.store.load(run.pipeline_id)
    if stored is not None and stored.positions:
        raise ReplayNotConfirmed(
            f"startFrom `{start.kind.value}` rewinds pipeline `{run.pipeline_id}` over committed positions "
            "(documents will be delivered again)",
            hint="set startFrom.confirmReplay to true to replay on purpose",
        )


async def _claim_and_open_source(run: PreparedRun) -> None:
    provider = run.pipeline.registry.source_provider(run.pipeline.source_config.type)
    run.claimed = await run.store.claim(run.pipeline_id, shared=provider.shared_claims)
    if run.start_from.kind != "checkpoint":
        # Stage state matches the checkpoint's positions only; a replay recomputes it from what it reads.
        run.claimed = dataclasses.replace(run.claimed, stage_state={})
    run.source_context = run.pipeline.source_context(run.claimed, run.params.mode, run.start_from)
    run.source = run.pipeline.create_source_for(run.source_context)


async def _fresh_attempt(run: PreparedRun) -> None:
    """A retry: new stages, connectors and claim, resuming from the last checkpoint."""
    run.pipeline = build_pipeline(run.params)
    run.store = run.pipeline.open_store()
    await _claim_and_open_source(run)
    run.sinks = run.pipeline.create_sink_chain()
    run.error_policy = run.pipeline.error_policy()
    get_run_logger().warning("attempt %s: resuming from checkpoint at %s", run.attempts, _positions(run))


def _executor(run: PreparedRun) -> StreamingPipelineExecutor:
    assert run.source is not None and run.sinks is not None and run.claimed is not None
    pipeline, params = run.pipeline, run.params
    observer = _observer(run)
    hooks = local_hooks.get()
    listener: ExecutorListener = (
        observer if hooks is None or hooks.listener is None else _Both(observer, hooks.listener)
    )
    executor = StreamingPipelineExecutor(
        run.pipeline_id,
        run.source,
        run.sinks,
        pipeline.stages,
        runtime=pipeline.runtime_options(params.maxDocuments, params.maxDuration),
        error_policy=run.error_policy or pipeline.error_policy(),
        checkpoint=pipeline.checkpoint_options(),
        store=run.store,
        claimed=run.claimed,
        listener=listener,
    )
    if run.source_context is not None:  # e.g. Kafka checkpoints what was delivered before a rebalance
        run.source_context.request_checkpoint = executor.checkpoint_now
    return executor


def _observer(run: PreparedRun) -> PrefectObserver:
    context = FlowRunContext.get()
    flow_run = context.flow_run if context else None
    logger = get_run_logger() if TaskRunContext.get() else None
    return PrefectObserver(
        run.pipeline_id,
        mode=run.params.mode,
        interval=run.pipeline.plan.runtime.metricsInterval,
        logger=logger or _fallback_logger(),
        scrubber=run.scrubber,
        flow_run=(flow_run.id, flow_run.name) if flow_run else None,
        deployment_id=flow_run.deployment_id if flow_run else None,
        description=run.scrubber.tree(run.pipeline.describe()),
    )


def _fallback_logger() -> Any:
    import logging

    return logging.getLogger("fluxion_flows.prefect")


class _Both(ExecutorListener):
    def __init__(self, first: ExecutorListener, second: ExecutorListener) -> None:
        self.listeners = (first, second)

    async def on_start(self, pipeline_id: str) -> None:
        for listener in self.listeners:
            await listener.on_start(pipeline_id)

    async def on_metrics(self, snapshot: dict[str, Any]) -> None:
        for listener in self.listeners:
            await listener.on_metrics(snapshot)

    async def on_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for listener in self.listeners:
            await listener.on_checkpoint(checkpoint)

    async def on_dead_letter(self, context: dict[str, Any]) -> None:
        for listener in self.listeners:
            await listener.on_dead_letter(context)

    async def on_stop(self, snapshot: dict[str, Any], error: BaseException | None) -> None:
        for listener in self.listeners:
            await listener.on_stop(snapshot, error)


async def _run_isolated(executor: StreamingPipelineExecutor, hooks: LocalHooks | None) -> RunResult:
    """Run the executor on its own loop in a worker thread; stop it gracefully on any interruption."""
    started: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
    finished: concurrent.futures.Future[RunResult] = concurrent.futures.Future()

    def settle(result: RunResult | None = None, error: BaseException | None = None) -> None:
        # The first outcome wins: teardown errors after it (client, loop) must not replace it, and
        # ``finished`` may already be cancelled along with the awaiting task on the flow's side.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            if error is None:
                finished.set_result(result)  # type: ignore[arg-type]
            else:
                finished.set_exception(error)

    async def main() -> None:
        started.set_result(asyncio.get_running_loop())
        # One API client for this loop: checkpoint saves, artifacts and the store reuse it (no
        # per-call connection and CSRF-token round trips).
        async with AsyncClientContext():
            try:
                settle(await executor.run())
            except BaseException as exc:
                settle(error=exc)

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            settle(error=exc)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(target,), name="fluxion-executor", daemon=True)
    thread.start()
    loop = started.result()
    interrupts = 0

    def stop(signum: int = signal.SIGTERM) -> None:
        nonlocal interrupts
        interrupts += 1
        if hooks and hooks.on_signal:
            hooks.on_signal(signum, interrupts)
        if interrupts == 1:
            loop.call_soon_threadsafe(executor.stop)
        else:
            loop.call_soon_threadsafe(_cancel_all, loop)

    with _on_sigint(lambda: stop(signal.SIGINT)):
        try:
            return await asyncio.wrap_future(finished)
        except BaseException:
            # TerminationSignal (cancellation), CancelledError, KeyboardInterrupt: stop gracefully first.
            # (When the executor itself failed, it is already shutting down: just wait for it.)
            if thread.is_alive():
                executor_failed = finished.done() and not finished.cancelled()
                if not executor_failed:
                    stop()
                thread.join()  # bounded by runtime.stopTimeout: the executor cancels itself after it
            raise


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    for pending in asyncio.all_tasks(loop):
        pending.cancel()


@contextlib.contextmanager
def _on_sigint(callback: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C → graceful stop (SIGTERM stays Prefect's: its cancel intent depends on it)."""
    loop = asyncio.get_running_loop()
    try:
        previous = signal.getsignal(signal.SIGINT)
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError, NotImplementedError):
        yield  # not the main thread: nothing to take over
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGINT, previous)


def _transient(error: PipelineFailed) -> bool:
    """Sink and source-connection failures may heal; stage errors and undecodable records will not."""
    cause = error.cause
    if isinstance(cause, NonRetryableError) or error.step is Step.STAGE:
        return False
    return not (error.step is Step.SOURCE and hasattr(cause, "error_type"))


def _shape(pipeline: Pipeline) -> str:
    described = pipeline.describe()
    sinks = ", ".join(s["type"] for s in described["sinks"])
    return f"{described['source']['type']} → {len(described['stages'])} stage(s) → {sinks}"


def _positions(run: PreparedRun) -> str:
    positions = run.claimed.positions if run.claimed else {}
    return run.scrubber.text(str(positions)) if positions else "the start (no checkpoint yet)"


__all__ = [
    "LocalHooks",
    "PreparedRun",
    "ReplayNotConfirmed",
    "RunFailed",
    "create_sink_chain",
    "create_source",
    "load_pipeline",
    "local_hooks",
    "run_pipeline",
]
