"""The Event Hubs source: the SDK's event processor feeding the executor through a bounded queue.

How it fits together:

* One ``EventHubConsumerClient.receive_batch`` runs for the whole run. The
  SDK's load balancer claims partitions through an ownership store (see
  :mod:`fluxion_connect_eventhub.ownership`); with the default ``memory``
  store this run owns every partition, with a shared store several runs of
  one pipeline split them, and a run that dies loses its claims when they
  expire.
* Each partition's callback converts its events to documents and puts them
  into a queue bounded by ``queueCapacity`` batches; a full queue blocks the
  callback, which stops the SDK's receiver from fetching (backpressure).
* ``next_batch`` hands out documents with ``positions``: per partition, the
  last event handed out (``{"sequenceNumber", "offset"}``; resume after it).
* When the executor has checkpointed positions (``on_durable``), they are
  also written to the ownership store for the partitions this run owns, so a
  run that takes a partition over resumes right after them.
* Where a partition starts: an explicit ``StartFrom`` (CLI ``--start-from``)
  wins; otherwise the later of the ownership store's checkpoint and the
  pipeline checkpoint; otherwise ``startPosition``.
* Drain mode reads each partition up to the last sequence number it had when
  the run started (from the partition properties), then ends the stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.eventhub import CloseReason, EventData
from azure.eventhub.aio import CheckpointStore, EventHubConsumerClient, PartitionContext

from fluxion_connect_eventhub.connection import HubAddress
from fluxion_connect_eventhub.events import EventReader, Record
from fluxion_connect_eventhub.ownership import OwnershipStore
from fluxion_connect_eventhub.positions import (
    EARLIEST,
    LATEST,
    EventPosition,
    SdkPosition,
    Start,
    StartPlan,
    furthest,
)
from fluxion_flows.spi import (
    Document,
    Positions,
    RecordFailure,
    SourceBatch,
    SourceContext,
    SourceFailure,
    SourceProgress,
    StreamingSource,
)

log = logging.getLogger("fluxion_connect_eventhub.source")

_STOP_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class SourceSettings:
    """The source's validated options."""

    address: HubAddress
    consumer_group: str = "$Default"
    start: StartPlan = field(default_factory=lambda: StartPlan(Start(EARLIEST), {}))
    max_batch_size: int = 128
    max_wait_time: float | None = None
    prefetch: int = 300
    owner_level: int | None = None
    queue_capacity: int = 32
    load_balancing_interval: float = 10.0
    ownership_expiration: float | None = None
    load_balancing_strategy: str = "greedy"
    lag_refresh_interval: float = 10.0
    shared: bool = False
    """True when the ownership store is shared between runs (file, postgres, redis)."""


@dataclass
class _Chunk:
    """Converted events of one partition, waiting in the queue (``start`` = first not handed out)."""

    partition_id: str
    records: list[Record]
    clean: bool
    start: int = 0


class _Tracking(CheckpointStore):
    """The ``CheckpointStore`` the SDK sees: the ownership store plus what this run knows better.

    Claims go straight to the ownership store. Checkpoints, which the SDK
    reads when it (re)claims a partition, are the later of the store's and of
    the positions this run already holds: the pipeline checkpoint it started
    from, and the events it has queued. So a partition receiver that the SDK
    restarts after an error resumes after the queued events instead of
    re-reading them.
    """

    def __init__(self, backend: OwnershipStore, use_backend_checkpoints: bool) -> None:
        self.backend = backend
        self.use_backend_checkpoints = use_backend_checkpoints
        self.known: dict[str, EventPosition] = {}
        self.resumed: set[str] = set()
        """Partitions the SDK was given a checkpoint for (it then resumes after it, exclusive)."""

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        return await self.backend.list_ownership(fully_qualified_namespace, eventhub_name, consumer_group)

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        return await self.backend.claim_ownership(ownership_list)

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        await self.backend.update_checkpoint(checkpoint)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        stored = await self.stored_positions(fully_qualified_namespace, eventhub_name, consumer_group)
        merged = dict(stored)
        for pid, position in self.known.items():
            merged[pid] = furthest(merged.get(pid), position)
        self.resumed.update(merged)
        return [
            p.to_sdk_checkpoint(pid, fully_qualified_namespace, eventhub_name, consumer_group)
            for pid, p in merged.items()
        ]

    async def stored_positions(self, namespace: str, hub: str, group: str) -> dict[str, EventPosition]:
        if not self.use_backend_checkpoints:
            return {}
        found: dict[str, EventPosition] = {}
        for record in await self.backend.list_checkpoints(namespace, hub, group):
            found[str(record["partition_id"])] = EventPosition(
                int(record["sequence_number"]), str(record["offset"])
            )
        return found


class _ConsumerClient(EventHubConsumerClient):
    """The SDK's consumer client, with concurrent ``get_partition_ids`` calls sharing one request.

    The source reads the partition ids while the SDK's load balancer, started
    at the same time, reads them too; each read is a management request that
    opens its own link and authorises it (about 0.4 s of the SDK's polling).
    Later calls, once the first has answered, ask the service again.
    """

    _partition_ids_read: asyncio.Future[list[str]] | None = None

    async def get_partition_ids(self) -> list[str]:
        read = self._partition_ids_read
        if read is None:
            read = asyncio.ensure_future(super().get_partition_ids())
            read.add_done_callback(self._partition_ids_read_done)
            self._partition_ids_read = read
        return list(await asyncio.shield(read))

    def _partition_ids_read_done(self, read: asyncio.Future[list[str]]) -> None:
        self._partition_ids_read = None
        if not read.cancelled():
            read.exception()  # retrieved here too: a caller cancelled meanwhile would leave it unseen


class _Starts(dict[str, SdkPosition]):
    """``starting_position`` for any partition id, read by the SDK with ``get(partition_id, "-1")``.

    Answering for partitions not known in advance lets the receivers start
    before this run has read the hub's partition ids (a management request of
    its own, about 0.4 s of the SDK's polling), so the two overlap.
    """

    def __init__(self, start_for: Callable[[str], Start]) -> None:
        super().__init__()
        self._start_for = start_for

    def get(self, key: str, default: Any = None) -> Any:
        return self._start_for(key).position

    def __bool__(self) -> bool:
        return True


class _Inclusive(dict[str, bool]):
    """``starting_position_inclusive`` per partition, read by the SDK each time it starts a receiver.

    The SDK applies this flag to a checkpoint's offset too, so it must turn
    False once the partition resumes from a checkpoint; a plain dict would
    replay the checkpointed event. Truthy even when empty: the SDK replaces a
    falsy value by ``False`` for every partition.
    """

    def __init__(self, start_for: Callable[[str], Start], tracking: _Tracking) -> None:
        super().__init__()
        self._start_for = start_for
        self._tracking = tracking

    def get(self, key: str, default: Any = False) -> Any:
        if key in self._tracking.resumed:
            return False
        return self._start_for(key).inclusive

    def __bool__(self) -> bool:
        return True


class EventHubSource(StreamingSource):
    """A running ``eventhub`` source (see the module docstring)."""

    def __init__(self, context: SourceContext, settings: SourceSettings, ownership: OwnershipStore) -> None:
        self._context = context
        self._settings = settings
        self._address = settings.address
        self._reader = EventReader(settings.address.hub, settings.consumer_group)
        self._queue: asyncio.Queue[_Chunk] = asyncio.Queue(maxsize=max(1, settings.queue_capacity))
        self._pending: collections.deque[_Chunk] = collections.deque()
        explicit = context.start_from.kind != "checkpoint"
        self._tracking = _Tracking(ownership, use_backend_checkpoints=not explicit)
        self._client: EventHubConsumerClient | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._partitions: list[str] = []
        self._properties: dict[str, dict[str, Any]] = {}
        self._queued: dict[str, EventPosition] = {}
        self._handed: dict[str, EventPosition] = {}
        self._written: dict[str, EventPosition] = {}
        self._owned: set[str] = set()
        self._lost: set[str] = set()
        """Partitions another run took over: their positions are that run's to checkpoint."""
        self._targets: dict[str, int] | None = None
        self._planned = asyncio.Event()
        self._drain_start: dict[str, int] = {}
        self._others_done: set[str] = set()
        self._next_others_check = 0.0
        self._receive_errors = 0
        self._checkpoint_failures = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        settings = self._settings
        self._client = client = _ConsumerClient.from_connection_string(
            self._address.connection_string.reveal(),
            consumer_group=settings.consumer_group,
            eventhub_name=self._address.hub,
            checkpoint_store=self._tracking,
            load_balancing_interval=settings.load_balancing_interval,
            partition_ownership_expiration_interval=settings.ownership_expiration,
            load_balancing_strategy=settings.load_balancing_strategy,
        )
        starts, inclusive = self._start_positions()
        # receivers start at once: the SDK's own start-up overlaps the partition and property reads
        self._receiving = asyncio.create_task(self._receive(starts, inclusive), name="eventhub.receive")
        self._partitions = list(await client.get_partition_ids())
        if self._context.drain:
            await self._refresh_properties()
            await self._plan_drain(starts)
        else:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="eventhub.properties")
        self._planned.set()

    def _start_for(self, partition_id: str) -> Start:
        """Where a partition with no checkpoint starts: ``StartFrom`` overrides ``startPosition``."""
        start_from = self._context.start_from
        if start_from.kind == "earliest":
            return Start(EARLIEST)
        if start_from.kind == "latest":
            return Start(LATEST)
        if start_from.kind == "timestamp" and start_from.timestamp is not None:
            return Start(dt.datetime.fromtimestamp(start_from.timestamp, tz=dt.UTC), inclusive=True)
        return self._settings.start.for_partition(partition_id)

    def _start_positions(self) -> tuple[_Starts, _Inclusive]:
        """Initial positions for receivers with no checkpoint; seeds the known positions.

        Seeds are taken for every partition they name: a partition that does
        not exist is never claimed, so its seed is never read (Event Hubs
        partitions are only ever added, never removed).
        """
        start_from = self._context.start_from
        seeds = start_from.positions if start_from.kind == "positions" else {}
        if start_from.kind == "checkpoint":
            seeds = self._context.positions
        for pid, value in seeds.items():
            position = EventPosition.from_json(value)
            if position is None:
                log.warning("ignoring position %r for partition %s: not an Event Hubs position", value, pid)
            else:
                self._tracking.known[pid] = position
        return _Starts(self._start_for), _Inclusive(self._start_for, self._tracking)

    async def _receive(self, starts: _Starts, inclusive: _Inclusive) -> None:
        assert self._client is not None
        settings = self._settings
        await self._client.receive_batch(
            self._on_events,
            max_batch_size=settings.max_batch_size,
            max_wait_time=settings.max_wait_time,
            owner_level=settings.owner_level,
            prefetch=settings.prefetch,
            starting_position=starts,
            starting_position_inclusive=inclusive,  # a dict whose get() tracks resumed partitions
            on_error=self._on_error,
            on_partition_initialize=self._on_initialize,
            on_partition_close=self._on_close,
        )

    async def cancel(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        client, self._client = self._client, None
        tasks = [t for t in (self._receiving, self._refresher) if t is not None]
        if client is not None:
            # close() stops the event processor, which releases this run's claims
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_GRACE_SECONDS):
                    await _stop_partition_tasks(client)
                    await client.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def close(self) -> None:
        await self.cancel()
        with contextlib.suppress(Exception):
            await self._tracking.backend.close()

    # ------------------------------------------------------------------ SDK callbacks
    async def _on_events(self, context: PartitionContext, events: list[EventData]) -> None:
        if not events:
            return
        pid = context.partition_id
        if not self._planned.is_set():
            await self._planned.wait()
        if self._targets is not None:
            target = self._targets.get(pid)
            if target is None:
                return
            events = [e for e in events if (e.sequence_number or 0) <= target]
            if not events:
                return
        records = self._reader.read(pid, events)
        clean = all(type(r[0]) is dict for r in records)
        await self._queue.put(_Chunk(pid, records, clean))
        last = records[-1]
        position = EventPosition(last[1], last[2])
        self._queued[pid] = position
        self._tracking.known[pid] = furthest(self._tracking.known.get(pid), position)

    async def _on_error(self, context: PartitionContext | None, error: Exception) -> None:
        self._receive_errors += 1
        where = f"partition {context.partition_id}" if context is not None else "load balancing"
        log.warning("event hub %s (%s): %s: %s", self._address.hub, where, type(error).__name__, error)

    async def _on_initialize(self, context: PartitionContext) -> None:
        self._owned.add(context.partition_id)
        self._lost.discard(context.partition_id)

    async def _on_close(self, context: PartitionContext, reason: Any) -> None:
        self._owned.discard(context.partition_id)
        if reason == CloseReason.OWNERSHIP_LOST and not self._stopping:  # our own stop cancels as "lost" too
            self._lost.add(context.partition_id)

    # ------------------------------------------------------------------ batches
    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        self._raise_receive_failure()
        if self._stopping:
            return None
        if not self._pending and self._queue.empty():
            if self._targets is not None and await self._drain_finished():
                return None
            try:
                async with asyncio.timeout(timeout):
                    self._pending.append(await self._queue.get())
            except TimeoutError:
                self._raise_receive_failure()
                return SourceBatch([])
        return self._take(max(1, max_documents))

    def _take(self, limit: int) -> SourceBatch:
        documents: list[Document] = []
        failures: list[RecordFailure] = []
        positions: Positions = {}
        count = 0
        while count < limit:
            if not self._pending:
                try:
                    self._pending.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            chunk = self._pending[0]
            records = chunk.records
            end = min(len(records), chunk.start + limit - count)
            if chunk.clean:
                documents.extend(r[0] for r in records[chunk.start : end])  # type: ignore[misc]
            else:
                for record in records[chunk.start : end]:
                    item = record[0]
                    if type(item) is dict:
                        documents.append(item)
                    else:
                        failures.append(item)  # type: ignore[arg-type]
            count += end - chunk.start
            last = records[end - 1]
            position = EventPosition(last[1], last[2])
            positions[chunk.partition_id] = position.to_json()
            self._handed[chunk.partition_id] = position
            if end == len(records):
                self._pending.popleft()
            else:
                chunk.start = end
        return SourceBatch(documents, positions, failures)

    def _raise_receive_failure(self) -> None:
        task = self._receiving
        if task is None or not task.done() or task.cancelled() or self._stopping:
            return
        error = task.exception()
        if error is None:
            return
        self._receiving = None
        starts, inclusive = self._start_positions_after_failure()
        self._receiving = asyncio.create_task(self._receive(starts, inclusive), name="eventhub.receive")
        raise SourceFailure(error)

    def _start_positions_after_failure(self) -> tuple[_Starts, _Inclusive]:
        starts, inclusive = self._start_positions()
        for pid, position in self._queued.items():
            self._tracking.known[pid] = furthest(self._tracking.known.get(pid), position)
        return starts, inclusive

    # ------------------------------------------------------------------ checkpoints
    def owned_positions(self, positions: Positions) -> Positions:
        """Leave out partitions another run took over: runs sharing the hub checkpoint their own.

        Partitions released by our own shutdown stay in, so the final checkpoint keeps them.
        """
        return {pid: position for pid, position in positions.items() if pid not in self._lost}

    async def on_durable(self, positions: Positions) -> None:
        """Write the checkpoints of partitions this run read to the ownership store.

        Also after this run lost or released a partition: stores only move a
        checkpoint forward, so a late write cannot rewind the new owner, and
        every stored position was delivered by whoever wrote it.
        """
        for pid, value in positions.items():
            position = EventPosition.from_json(value)
            if position is None or pid not in self._handed:
                continue
            written = self._written.get(pid)
            if written is not None and written.sequence_number >= position.sequence_number:
                continue
            checkpoint = position.to_sdk_checkpoint(
                pid, self._address.namespace, self._address.hub, self._settings.consumer_group
            )
            try:
                await self._tracking.backend.update_checkpoint(checkpoint)
            except Exception as exc:
                self._checkpoint_failures += 1
                log.warning(
                    "could not write the checkpoint of partition %s to the ownership store: %s", pid, exc
                )
                continue
            self._written[pid] = position

    # ------------------------------------------------------------------ drain
    async def _plan_drain(self, starts: Mapping[str, SdkPosition]) -> None:
        """Targets: each partition's last sequence number now; partitions already past it are done."""
        known = dict(self._tracking.known)
        if self._tracking.use_backend_checkpoints:
            stored = await self._tracking.stored_positions(
                self._address.namespace, self._address.hub, self._settings.consumer_group
            )
            for pid, position in stored.items():
                known[pid] = furthest(known.get(pid), position)
        targets: dict[str, int] = {}
        for pid in self._partitions:
            props = self._properties.get(pid, {})
            last = int(props.get("last_enqueued_sequence_number", -1))
            if props.get("is_empty", last < 0):
                continue
            resume = known.get(pid)
            if resume is not None:
                begin = resume.sequence_number
            elif starts.get(pid) == LATEST:
                continue
            else:
                begin = int(props.get("beginning_sequence_number", 0)) - 1
            if begin >= last or _starts_past(starts.get(pid), props):
                continue
            targets[pid] = last
            self._drain_start[pid] = begin
        self._targets = targets

    def _drained(self) -> bool:
        assert self._targets is not None
        return all(
            pid in self._others_done or (pid in self._queued and self._queued[pid].sequence_number >= target)
            for pid, target in self._targets.items()
        )

    async def _drain_finished(self) -> bool:
        """Every partition reached its target, read by this run or (shared store) by another."""
        if self._drained():
            return True
        if self._settings.shared and time.monotonic() >= self._next_others_check:
            self._next_others_check = time.monotonic() + self._settings.load_balancing_interval
            with contextlib.suppress(Exception):
                stored = await self._tracking.stored_positions(
                    self._address.namespace, self._address.hub, self._settings.consumer_group
                )
                assert self._targets is not None
                for pid, target in self._targets.items():
                    position = stored.get(pid)
                    if pid not in self._owned and position is not None and position.sequence_number >= target:
                        self._others_done.add(pid)
        return self._drained()

    def progress(self) -> SourceProgress | None:
        if self._targets is None:
            return None
        consumed = target_total = 0
        for pid, target in self._targets.items():
            begin = self._drain_start.get(pid, target)
            target_total += target - begin
            handed = self._handed.get(pid)
            reached = target if pid in self._others_done else (handed.sequence_number if handed else begin)
            consumed += max(0, min(reached, target) - begin)
        return SourceProgress(consumed=float(consumed), target=float(target_total))

    # ------------------------------------------------------------------ lag
    async def _refresh_properties(self) -> None:
        client = self._client
        if client is None:
            return
        results = await asyncio.gather(
            *(client.get_partition_properties(pid) for pid in self._partitions), return_exceptions=True
        )
        for pid, result in zip(self._partitions, results, strict=True):
            if isinstance(result, dict):
                self._properties[pid] = result

    async def _refresh_loop(self) -> None:
        while not self._stopping:
            try:
                await self._refresh_properties()
            except Exception as exc:
                log.debug("partition properties refresh failed: %s", exc)
            await asyncio.sleep(self._settings.lag_refresh_interval)

    def metrics(self) -> dict[str, float]:
        """Lag per owned partition (last enqueued sequence number minus the last one handed out)."""
        out: dict[str, float] = {}
        total = 0
        for pid in sorted(self._owned, key=_partition_order):
            props = self._properties.get(pid)
            if props is None:
                continue
            last = int(props.get("last_enqueued_sequence_number", -1))
            reached = self._handed.get(pid) or self._tracking.known.get(pid)
            if reached is not None:
                current = reached.sequence_number
            else:
                current = int(props.get("beginning_sequence_number", 0)) - 1
            lag = max(0, last - current)
            out[f"lag.{pid}"] = float(lag)
            total += lag
        out["lag"] = float(total)
        out["ownedPartitions"] = float(len(self._owned))
        out["receiveErrors"] = float(self._receive_errors)
        out["checkpointFailures"] = float(self._checkpoint_failures)
        return out

    # ------------------------------------------------------------------ for tests and diagnostics
    @property
    def owned_partitions(self) -> set[str]:
        return set(self._owned)

    @property
    def ownership(self) -> OwnershipStore:
        return self._tracking.backend


def _partition_order(pid: str) -> tuple[int, str]:
    return (int(pid), pid) if pid.isdigit() else (1 << 30, pid)


def _starts_past(start: SdkPosition | None, props: Mapping[str, Any]) -> bool:
    """Whether an explicit start lies beyond the partition's last event (nothing to drain)."""
    last = int(props.get("last_enqueued_sequence_number", -1))
    if isinstance(start, int):
        return start > last
    if isinstance(start, dt.datetime):
        enqueued = props.get("last_enqueued_time_utc")
        return isinstance(enqueued, dt.datetime) and start > enqueued
    if isinstance(start, str) and start.isdigit():
        last_offset = str(props.get("last_enqueued_offset", ""))
        return last_offset.isdigit() and int(start) > int(last_offset)
    return False


async def _stop_partition_tasks(client: EventHubConsumerClient) -> None:
    """Cancel and await the SDK's partition receivers before ``close()``.

    The SDK's ``EventProcessor.stop`` polls for its partition tasks to finish
    in one-second sleeps, so every stop costs at least a second; ending the
    tasks first (which also releases the claims) makes it return at once.
    Closing a receiver also awaits its keep-alive task, which sleeps in
    one-second steps (about half a second per stop, on average): those tasks
    are cancelled first, as a receiver that is being closed needs no keep-alive.
    Reaches into SDK internals, hence the defensive lookups: if they change,
    ``close()`` alone still does the job, only slower.
    """
    processors = getattr(client, "_event_processors", None)
    if not isinstance(processors, dict):
        return
    for processor in processors.values():
        consumers = getattr(processor, "_consumers", None)
        if isinstance(consumers, dict):
            for consumer in consumers.values():
                _cancel_keep_alive(getattr(consumer, "_handler", None))
    tables = [t for p in processors.values() if isinstance(t := getattr(p, "_tasks", None), dict)]
    tasks = [task for table in tables for task in table.values() if isinstance(task, asyncio.Task)]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    # each task closes its receiver in a shielded step that outlives the cancellation
    while any(tables):
        await asyncio.sleep(0.02)


def _cancel_keep_alive(handler: Any) -> None:
    """Cancel a receive handler's keep-alive task and detach it, so closing does not wait for it."""
    keep_alive = getattr(handler, "_keep_alive_thread", None)
    if isinstance(keep_alive, asyncio.Future):
        keep_alive.cancel()
        handler._keep_alive_thread = None
