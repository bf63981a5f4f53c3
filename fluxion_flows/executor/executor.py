"""The streaming executor: fetch → transform → deliver → checkpoint → observe.

Three asyncio tasks connected by document-bounded queues (or one sequential
loop with ``directHandoff``). Delivery happens in source order, so the
positions of the last delivered batch are always safe to checkpoint. Stage
state is snapshotted by the transformer at a batch boundary and committed only
once that very batch has been delivered, so state and positions in a
checkpoint always agree: a restart neither loses nor double-counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from fluxion_flows.checkpoint import Checkpoint, CheckpointStore, MemoryCheckpointStore
from fluxion_flows.executor import stage_state
from fluxion_flows.executor.listener import ExecutorListener
from fluxion_flows.executor.metrics import PipelineMetrics, StageMetrics
from fluxion_flows.executor.options import CheckpointOptions, ErrorPolicy, RuntimeOptions
from fluxion_flows.executor.policy import (
    Failure,
    Outcome,
    PipelineFailed,
    PolicyRunner,
    Step,
    Stopping,
    always,
    never,
)
from fluxion_flows.executor.queue import DocumentQueue
from fluxion_flows.executor.sink_chain import SinkChainDelivery, SinkNode, stage_action
from fluxion_flows.spi.batch import Document, Positions, RecordFailure, SourceBatch
from fluxion_flows.spi.sink import Batch, StreamingSink
from fluxion_flows.spi.source import StreamingSource
from fluxion_flows.stages.base import Stage, as_stage, manifest_indexed

log = logging.getLogger("fluxion_flows.executor")

StageLike = Stage | Callable[[list[Document]], list[Document]]


@dataclass
class WorkItem:
    """One micro-batch on its way through the pipeline."""

    documents: list[Document]
    positions: Positions
    fetched: int
    failures: list[RecordFailure] = field(default_factory=list)
    state: dict[str, Any] | None = None
    """Transform-stage state snapshotted right after this item, when a checkpoint was requested."""


_END: Any = object()


@dataclass
class RunResult:
    pipeline_id: str
    metrics: dict[str, Any]
    checkpoint: Checkpoint | None
    ended_by: str  # "end-of-stream" | "stopped" | "limit"


class StreamingPipelineExecutor:
    def __init__(
        self,
        pipeline_id: str,
        source: StreamingSource,
        sink: StreamingSink | SinkNode,
        stages: Sequence[StageLike] = (),
        *,
        runtime: RuntimeOptions | None = None,
        error_policy: ErrorPolicy | None = None,
        checkpoint: CheckpointOptions | None = None,
        store: CheckpointStore | None = None,
        claimed: Checkpoint | None = None,
        listener: ExecutorListener | None = None,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.source = source
        self.chain = sink if isinstance(sink, SinkNode) else SinkNode("sink", sink, type(sink).__name__)
        self.stages = [as_stage(s) for s in stages]
        self.runtime = runtime or RuntimeOptions()
        self.checkpoint_options = checkpoint or CheckpointOptions()
        self.store = store or MemoryCheckpointStore()
        self.listener = listener or ExecutorListener()
        self.metrics = PipelineMetrics(pipeline_id)
        self._stage_metrics = [StageMetrics(s.name, s.path) for s in self.stages]
        self.metrics.stages.extend(self._stage_metrics)
        self.chain.bind_metrics(self.metrics)
        self._stopping = asyncio.Event()
        self.policy = PolicyRunner(
            error_policy or ErrorPolicy(), self.metrics, self._stopping, self._dead_lettered
        )
        self._delivery = SinkChainDelivery(self.chain, self.policy, self.runtime.micro_batch_size)
        self._claimed = claimed
        self._checkpoint: Checkpoint | None = None
        self._delivered: Positions = {}
        self._committable: tuple[Positions, dict[str, Any]] | None = None
        self._uncommitted_docs = 0
        self._last_commit = time.monotonic()
        self._commit_task: asyncio.Task[None] | None = None
        self._snapshot_wanted = False
        self._stateful = any(s.stateful for s in self.stages)
        self._ended_by = "stopped"
        self._base_documents = 0
        self._drained = False
        self._run_task: asyncio.Task[Any] | None = None
        self._stop_deadline: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- control
    def stop(self) -> None:
        """Ask for a graceful stop: stop reading, deliver what is in flight, checkpoint, close.

        If in-flight work is not delivered within ``runtime.stop_timeout`` the run
        is cancelled; the final checkpoint then covers only what was delivered.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._run_task is not None and not self._run_task.done():
            loop = asyncio.get_running_loop()
            self._stop_deadline = loop.call_later(self.runtime.stop_timeout, self._run_task.cancel)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --------------------------------------------------------------------- run
    async def run(self) -> RunResult:
        error: BaseException | None = None
        self._run_task = asyncio.current_task()
        try:
            await self._prepare()
            await self.listener.on_start(self.pipeline_id)
            runner = self._run_sequential if self.runtime.direct_handoff else self._run_pipelined
            async with (
                _ticker(self._observe, self.runtime.observe_interval),
                _ticker(self._commit_if_due, max(self.checkpoint_options.interval, 0.05)),
            ):
                with contextlib.suppress(Stopping):
                    await self._with_limits(runner)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if self._stop_deadline is not None:
                self._stop_deadline.cancel()
            await self._shutdown(error)
        return RunResult(self.pipeline_id, self.metrics.snapshot(), self._checkpoint, self._ended_by)

    async def _prepare(self) -> None:
        claimed = self._claimed or await self.store.claim(self.pipeline_id)
        self._checkpoint = claimed
        self._base_documents = claimed.documents
        self._delivered = dict(claimed.positions)
        self._restore_state(claimed.stage_state)
        for sink in self.chain.sinks():
            await sink.open()
        if self.policy.policy.dead_letter is not None:
            await self.policy.policy.dead_letter.open()
        await self.source.start()

    async def _with_limits(self, runner: Callable[[], Any]) -> None:
        limit = self.runtime.max_duration
        if limit is None:
            await runner()
            return
        loop = asyncio.get_running_loop()
        handle = loop.call_later(limit, self._limit_reached)
        try:
            await runner()
        finally:
            handle.cancel()

    def _limit_reached(self) -> None:
        self._ended_by = "limit"
        self.stop()

    async def _run_sequential(self) -> None:
        while True:
            item = await self._fetch()
            if item is None:
                break
            await self._deliver(await self._transform(item))
        self._drained = True

    async def _run_pipelined(self) -> None:
        capacity = self.runtime.queue_capacity
        to_transform: DocumentQueue[WorkItem] = DocumentQueue(capacity, self.metrics.transform_queue)
        to_deliver: DocumentQueue[WorkItem] = DocumentQueue(capacity, self.metrics.delivery_queue)

        async def fetcher() -> None:
            while (item := await self._fetch()) is not None:
                await to_transform.put(item, len(item.documents))
            await to_transform.put(_END, 0)

        async def transformer() -> None:
            while (item := await to_transform.get()) is not _END:
                done = await self._transform(item)
                await to_deliver.put(done, len(done.documents))
            await to_deliver.put(_END, 0)

        async def deliverer() -> None:
            while (item := await to_deliver.get()) is not _END:
                await self._deliver(item)
            self._drained = True

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(fetcher(), name="fluxion.fetch")
                group.create_task(transformer(), name="fluxion.transform")
                group.create_task(deliverer(), name="fluxion.deliver")
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None

    # ------------------------------------------------------------------- fetch
    async def _fetch(self) -> WorkItem | None:
        """Coalesce source batches into one micro-batch (size or ``maxBatchWait`` bound)."""
        size = self.runtime.micro_batch_size
        limit = self.runtime.max_documents
        item = WorkItem([], {}, 0)
        deadline = time.monotonic() + self.runtime.max_batch_wait
        while not self._stopping.is_set():
            if limit is not None and self.metrics.documents_in >= limit:
                self._ended_by = "limit"
                self._stopping.set()
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if item.documents or item.positions or item.failures:
                    return item
                deadline = time.monotonic() + self.runtime.max_batch_wait
                continue
            batch = await self._next_batch(size - len(item.documents), min(remaining, 0.25))
            if batch is None:
                self._ended_by = "end-of-stream"
                break
            self._absorb(item, batch)
            if len(item.documents) >= size:
                return item
        return item if (item.documents or item.positions or item.failures) else None

    def _absorb(self, item: WorkItem, batch: SourceBatch) -> None:
        item.documents.extend(batch.documents)
        item.positions.update(batch.positions)
        item.failures.extend(batch.failures)
        item.fetched += len(batch.documents) + len(batch.failures)
        self.metrics.documents_in += len(batch.documents)

    async def _next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        failure = Failure(Step.SOURCE, "source", [], {})
        while True:
            outcome, batch = await self.policy.run(
                lambda: self.source.next_batch(max(1, max_documents), timeout), failure
            )
            if outcome is Outcome.DONE:
                return batch
            await asyncio.sleep(min(1.0, self.policy.policy.initial_backoff))

    # --------------------------------------------------------------- transform
    async def _transform(self, item: WorkItem) -> WorkItem:
        for record in item.failures:
            await self._record_failed(record)
        if item.documents and self.stages:
            item.documents = await self._run_stages(item)
        if self._snapshot_wanted:
            self._snapshot_wanted = False
            item.state = self._snapshot(self.stages, "process")
        return item

    async def _run_stages(self, item: WorkItem) -> list[Document]:
        outputs = await self.policy.run_batch(
            stage_action(self.stages, self._stage_metrics),
            Failure(Step.STAGE, "process", item.documents, item.positions),
            isolate=never if self._stateful else always,
        )
        return outputs[0] if len(outputs) == 1 else [d for part in outputs for d in part]

    async def _record_failed(self, record: RecordFailure) -> None:
        failure = Failure(
            Step.SOURCE,
            "source",
            [{"raw": record.raw}] if record.raw else [],
            dict(record.position),
            {"record": {"position": dict(record.position)}},
        )
        error = _RecordError(record.error_type, record.error)
        self.metrics.failures += 1
        await self.policy.give_up(error, failure)

    # ----------------------------------------------------------------- deliver
    async def _deliver(self, item: WorkItem) -> None:
        self._raise_commit_failure()
        started = time.perf_counter()
        if item.documents or item.fetched:
            batch = Batch(item.documents, positions=item.positions, key=self._batch_key(item.positions))
            self.metrics.documents_out += await self._delivery.deliver(batch)
            self.metrics.batches += 1
            self.metrics.last_batch_size = len(item.documents)
        self._delivered.update(item.positions)
        self._uncommitted_docs += item.fetched
        if not self._stateful:
            self._committable = (dict(self._delivered), self._snapshot_chain())
        elif item.state is not None:
            self._committable = (dict(self._delivered), {**item.state, **self._snapshot_chain()})
        elapsed = (time.perf_counter() - started) * 1000
        self.metrics.last_batch_ms = elapsed
        self.metrics.total_batch_ms += elapsed
        if self._checkpoint_due():
            self._request_commit()

    def _batch_key(self, positions: Positions) -> str:
        """Stable across retries and replays: the source positions the batch spans, hashed."""
        start = {key: self._delivered.get(key) for key in positions}
        digest = hashlib.sha256(orjson.dumps([start, positions], option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()[:32]

    # -------------------------------------------------------------- checkpoint
    def _checkpoint_due(self) -> bool:
        every = self.checkpoint_options.every_documents
        if every is not None and self._uncommitted_docs >= every:
            return True
        return time.monotonic() - self._last_commit >= self.checkpoint_options.interval

    async def _commit_if_due(self) -> None:
        """Commit delivered positions even when no batch arrives (an idle source)."""
        if self._committable is not None and self._checkpoint_due():
            self._request_commit()

    def _raise_commit_failure(self) -> None:
        """A background commit that failed (e.g. fenced by a newer run) ends this run."""
        task = self._commit_task
        if task is not None and task.done() and task.exception() is not None:
            self._commit_task = None
            raise task.exception()  # type: ignore[misc]

    def _request_commit(self) -> None:
        self._raise_commit_failure()
        if self._stateful and (self._committable is None or self._committable[0] != self._delivered):
            self._snapshot_wanted = True
        if self._committable is None or (self._commit_task is not None and not self._commit_task.done()):
            return
        positions, state = self._committable
        self._committable = None
        self._uncommitted_docs = 0
        self._last_commit = time.monotonic()
        self._commit_task = asyncio.create_task(self._commit(positions, state), name="fluxion.checkpoint")

    async def checkpoint_now(self) -> None:
        """Commit what has been delivered, now (sources call it before giving partitions away)."""
        if self._commit_task is not None and not self._commit_task.done():
            await asyncio.shield(self._commit_task)
        self._raise_commit_failure()
        if self._committable is not None and self._checkpoint is not None:
            positions, state = self._committable
            self._committable = None
            self._uncommitted_docs = 0
            self._last_commit = time.monotonic()
            self._commit_task = asyncio.create_task(self._commit(positions, state), name="fluxion.checkpoint")
            await asyncio.shield(self._commit_task)

    async def _commit(self, positions: Positions, state: dict[str, Any]) -> None:
        assert self._checkpoint is not None
        for sink in self.chain.sinks():
            await sink.flush()
        positions = self.source.owned_positions(positions)
        checkpoint = Checkpoint(
            pipeline_id=self.pipeline_id,
            generation=self._checkpoint.generation,
            positions=positions,
            stage_state=state,
            committed_at=time.time(),
            documents=self._base_documents + self.metrics.documents_out,
        )
        await self.store.save(checkpoint)
        self._checkpoint = checkpoint
        self.metrics.checkpoints += 1
        self.metrics.last_checkpoint_at = checkpoint.committed_at
        await self.source.on_durable(positions)
        summary = {k: v for k, v in checkpoint.to_dict().items() if k != "stageState"}
        await _notify(self.listener.on_checkpoint(summary))

    def _snapshot(self, stages: Sequence[Stage], scope: str) -> dict[str, Any]:
        return {f"{scope}[{i}]": stage_state.entry(s) for i, s in manifest_indexed(stages) if s.stateful}

    def _snapshot_chain(self) -> dict[str, Any]:
        return {path: stage_state.entry(s) for path, s in self.chain.all_stages() if s.stateful}

    def _restore_state(self, state: dict[str, Any]) -> None:
        named = {f"process[{i}]": s for i, s in manifest_indexed(self.stages)}
        named.update(dict(self.chain.all_stages()))
        stage_state.restore(named, state, self.pipeline_id)

    # ---------------------------------------------------------------- shutdown
    async def _shutdown(self, error: BaseException | None) -> None:
        """Runs on every exit path, including cancellation and SIGTERM-as-BaseException."""
        self._stopping.set()
        with contextlib.suppress(Exception):
            await self.source.cancel()
        try:
            await self._final_commit(error)
        finally:
            await self._close_all()
            self.metrics.source = _safe_metrics(self.source.metrics)
            await _notify(self.listener.on_stop(self.metrics.snapshot(), error))

    async def _final_commit(self, error: BaseException | None) -> None:
        if self._commit_task is not None:
            try:
                await self._commit_task
            except Exception as commit_error:
                if error is None:
                    raise
                log.error("checkpoint failed: %s", commit_error)
                return
        if self._checkpoint is None:
            return
        if error is None and self._drained and self._stateful:
            state = {**self._snapshot(self.stages, "process"), **self._snapshot_chain()}
            self._committable = (dict(self._delivered), state)
        if self._committable is None:
            return
        positions, state = self._committable
        if positions == self._checkpoint.positions and error is not None:
            return
        try:
            await self._commit(positions, state)
        except Exception as commit_error:
            if error is None:
                raise
            log.error("final checkpoint failed after %s: %s", type(error).__name__, commit_error)

    async def _close_all(self) -> None:
        closables: list[Any] = [self.source, *self.chain.sinks()]
        if self.policy.policy.dead_letter is not None:
            closables.append(self.policy.policy.dead_letter)
        for closable in closables:
            try:
                await closable.close()
            except Exception as exc:
                log.warning("closing %s failed: %s", type(closable).__name__, exc)

    # ----------------------------------------------------------------- observe
    async def _observe(self) -> None:
        self.metrics.source = _safe_metrics(self.source.metrics)
        for node in self.chain.walk():
            if node.sink is not None:
                self.metrics.sink_details[node.path] = _safe_metrics(node.sink.metrics)
        stages = [s for s in self.stages] + [s for _, s in self.chain.all_stages()]
        self.metrics.state_size = sum(s.state_size() for s in stages if s.stateful)
        snapshot = self.metrics.snapshot()
        progress = self.source.progress()
        if progress is not None:
            snapshot["progress"] = {
                "consumed": progress.consumed,
                "target": progress.target,
                "fraction": progress.fraction,
            }
        await _notify(self.listener.on_metrics(snapshot))

    async def _dead_lettered(self, context: dict[str, Any]) -> None:
        await _notify(self.listener.on_dead_letter(context))


class _RecordError(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _safe_metrics(read: Callable[[], dict[str, float]]) -> dict[str, float]:
    try:
        return dict(read())
    except Exception:
        return {}


async def _notify(call: Any) -> None:
    try:
        await call
    except Exception as exc:
        log.warning("executor listener failed: %s", exc)


@contextlib.asynccontextmanager
async def _ticker(tick: Callable[[], Any], interval: float) -> Any:
    """Call ``tick`` every ``interval`` seconds while the body runs, and once more at the end."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            await tick()

    task = asyncio.create_task(loop(), name="fluxion.observe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await tick()


__all__ = ["PipelineFailed", "RunResult", "Stopping", "StreamingPipelineExecutor"]
