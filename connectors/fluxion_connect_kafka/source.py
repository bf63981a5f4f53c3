"""The Kafka source: a consumer-group member that hands the executor batches with per-partition positions.

Delivery contract (at-least-once):

* A batch's ``positions`` are the next offsets after its records, keyed
  ``"topic:partition"``. The executor checkpoints them once every derived
  document is acknowledged, then calls :meth:`KafkaSource.on_durable`, which
  commits exactly those offsets to the consumer group (so lag tools work).
* Start: an explicit ``StartFrom`` (earliest / latest / timestamp /
  positions) wins; otherwise the checkpoint's position; otherwise the group's
  committed offset; otherwise ``auto.offset.reset`` (default ``earliest``).
* Rebalance (aiokafka revokes everything, then assigns the new set): offsets
  that became durable are committed in the revoke callback; partitions that
  stay with us continue where we stopped handing out records; partitions
  taken over from another member start at the newest of their checkpointed,
  durable and group-committed offsets. Records of a lost partition that the
  executor still holds are delivered anyway (a duplicate, never a loss) but
  their offsets are no longer committed to the group by this member. A
  ``CommitFailedError`` means the group moved on: the new owner re-reads from
  the last committed offset, so it is logged and counted, never fatal.

The source implements ``next_batch`` directly over ``getmany`` rather than
through a background queue: aiokafka already prefetches, and without a queue
of our own there are no undelivered records to purge on revoke.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from fluxion_connect_kafka.records import RecordReader, partition_id, split_partition_id
from fluxion_flows.spi import (
    Document,
    Positions,
    RecordFailure,
    SourceBatch,
    SourceContext,
    SourceProgress,
    StreamingSource,
)

log = logging.getLogger("fluxion_connect_kafka.source")

CHECKPOINT_REQUEST_TIMEOUT = 10.0
"""How long the revoke callback waits for an executor-provided checkpoint before giving the partitions up."""


@dataclass
class SourceSettings:
    """Everything the source needs, resolved from the validated options."""

    group_id: str
    client: dict[str, Any] = field(repr=False)
    """aiokafka arguments, including revealed SASL passwords: never printed."""
    topics: list[str] = field(default_factory=list)
    pattern: str | None = None
    poll_timeout: float = 0.5
    key_deserializer: str = "string"
    value_deserializer: str = "json"
    max_poll_records: int | None = None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards aiokafka's rebalance callbacks to the source."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._source._on_assigned(set(assigned))


class KafkaSource(StreamingSource):
    """Reads one topic, a list or a pattern as a member of a consumer group."""

    def __init__(self, context: SourceContext, settings: SourceSettings) -> None:
        self._context = context
        self._settings = settings
        self._reader = RecordReader(settings.key_deserializer, settings.value_deserializer)
        self._consumer: AIOKafkaConsumer | None = None
        self._stopped = False
        self._joined = False
        self._assigned: set[TopicPartition] = set()
        self._next: dict[TopicPartition, int] = {}
        """Next offset to hand out, per assigned partition (after the last record returned)."""
        self._retained: dict[TopicPartition, int] = {}
        """``_next`` of the partitions revoked by the rebalance in progress, for those we get back."""
        self._durable: dict[str, int] = {}
        self._committed: dict[str, int] = {}
        self._time_floor: dict[TopicPartition, int] = {}
        self._targets: dict[TopicPartition, int] = {}
        self._final: set[TopicPartition] = set()
        self._drain_start: dict[TopicPartition, int] = {}
        self._done: set[TopicPartition] = set()
        self._commit_failures = 0
        self._dropped_revoked = 0
        self._max_records = settings.max_poll_records

    # -- lifecycle -----------------------------------------------------------------

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the Kafka source is not started")
        return self._consumer

    async def start(self) -> None:
        settings = self._settings
        consumer = AIOKafkaConsumer(group_id=settings.group_id, enable_auto_commit=False, **settings.client)
        await consumer.start()
        self._consumer = consumer
        listener = _Listener(self)
        if settings.pattern is not None:
            consumer.subscribe(pattern=settings.pattern, listener=listener)
        else:
            consumer.subscribe(topics=settings.topics, listener=listener)

    async def cancel(self) -> None:
        self._stopped = True

    async def close(self) -> None:
        self._stopped = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await self._commit_durable(consumer, self._assigned)
            await consumer.stop()

    # -- reading -------------------------------------------------------------------

    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        if self._stopped or self._consumer is None:
            return None
        consumer = self._consumer
        if self._context.drain:
            await self._prepare_drain(consumer)
            if self._drain_complete():
                return None
        limit = max(1, max_documents)
        if self._max_records:
            limit = min(limit, self._max_records)
        wait = max(0.0, min(timeout, self._settings.poll_timeout))
        try:
            fetched = await consumer.getmany(timeout_ms=int(wait * 1000), max_records=limit)
        except ConsumerStoppedError:
            return None
        documents: list[Document] = []
        failures: list[RecordFailure] = []
        positions: Positions = {}
        for tp, records in fetched.items():
            if tp not in self._assigned:
                self._dropped_revoked += len(records)
                continue
            kept, end = self._limit(consumer, tp, records)
            if kept:
                self._reader.read(kept, documents, failures)
            if end is not None:
                self._next[tp] = end
                positions[partition_id(tp.topic, tp.partition)] = end
        if len(self._next) < len(self._assigned):
            await self._learn_positions(consumer)
        if self._context.drain:
            self._mark_done(consumer)
        return SourceBatch(documents, positions, failures)

    async def _learn_positions(self, consumer: AIOKafkaConsumer) -> None:
        """Positions of assigned partitions that returned no records yet (for lag), once fetched."""
        for tp in self._assigned:
            if tp not in self._next and consumer.highwater(tp) is not None:
                with contextlib.suppress(IllegalStateError):
                    self._next[tp] = await consumer.position(tp)

    def _limit(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> tuple[list[ConsumerRecord[bytes, bytes]], int | None]:
        """The records to turn into documents and the position after the consumed ones.

        In drain mode records at or past the partition's end offset are left
        unconsumed (the next run reads them). Records older than a seek-by-time
        floor are consumed (their offsets advance the position) but produce no
        documents.
        """
        if self._context.drain:
            target = self._target(consumer, tp)
            if target is not None and records and records[-1].offset >= target:
                records = [record for record in records if record.offset < target]
        if not records:
            return [], None
        end = records[-1].offset + 1
        floor = self._time_floor.get(tp)
        if floor is not None:
            for index, record in enumerate(records):
                if record.timestamp >= floor:
                    del self._time_floor[tp]
                    return records[index:], end
            return [], end
        return records, end

    # -- drain mode ------------------------------------------------------------------

    async def _prepare_drain(self, consumer: AIOKafkaConsumer) -> None:
        """Targets and start positions of newly assigned partitions (outside the rebalance callback)."""
        missing = [tp for tp in self._assigned if tp not in self._targets]
        if missing:
            ends = await consumer.end_offsets(missing)
            for tp in missing:
                self._targets[tp] = int(ends.get(tp) or 0)
        for tp in self._assigned:
            if tp not in self._next:
                with contextlib.suppress(IllegalStateError):
                    self._next[tp] = await consumer.position(tp)
            self._drain_start.setdefault(tp, self._next.get(tp, 0))

    def _target(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        """The drain end of ``tp``: end offsets seen at start, raised to the first fetched high watermark.

        Some brokers (Tansu) answer ``ListOffsets(LATEST)`` with the start of the
        last record batch plus one, so the first fetch's high watermark (always
        right) corrects it; later high watermarks are ignored so a producer that
        keeps writing cannot keep the drain going.
        """
        target = self._targets.get(tp)
        if target is None:
            return None
        if tp not in self._final:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return None
            target = max(target, highwater)
            self._targets[tp] = target
            self._final.add(tp)
        return target

    def _mark_done(self, consumer: AIOKafkaConsumer) -> None:
        for tp in self._assigned - self._done:
            target = self._target(consumer, tp)
            if target is not None and tp in self._next and self._next[tp] >= target:
                self._done.add(tp)
                consumer.pause(tp)

    def _drain_complete(self) -> bool:
        if not self._joined:
            return False
        return all(tp in self._done for tp in self._assigned)

    def progress(self) -> SourceProgress | None:
        if not self._context.drain:
            return None
        consumed = 0
        target = 0
        for tp, start in self._drain_start.items():
            end = self._targets.get(tp, start)
            target += max(0, end - start)
            consumed += max(0, min(self._next.get(tp, start), end) - start)
        return SourceProgress(consumed=float(consumed), target=float(target))

    # -- checkpoints and commits -----------------------------------------------------

    async def on_durable(self, positions: Positions) -> None:
        """Record the checkpointed offsets and commit those of partitions we still own to the group."""
        for key, offset in positions.items():
            try:
                split_partition_id(key)
                value = int(offset)
            except (TypeError, ValueError):
                continue
            if value > self._durable.get(key, -1):
                self._durable[key] = value
        if self._consumer is not None:
            await self._commit_durable(self._consumer, self._assigned)

    def owned_positions(self, positions: Positions) -> Positions:
        """Only partitions assigned to this member: other runs in the group own (and checkpoint) the rest."""
        owned = {partition_id(tp.topic, tp.partition) for tp in self._assigned}
        return {key: value for key, value in positions.items() if key in owned}

    async def _commit_durable(self, consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        metadata = f"fluxion:{self._context.pipeline_id}"
        for tp in partitions:
            key = partition_id(tp.topic, tp.partition)
            durable = self._durable.get(key)
            if durable is not None and durable > self._committed.get(key, -1):
                offsets[tp] = OffsetAndMetadata(durable, metadata)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            self._commit_failures += 1
            log.warning(
                "Kafka group %s did not accept the commit (%s); the partitions' new owner re-reads "
                "from the last committed offsets, nothing is lost",
                self._settings.group_id,
                type(exc).__name__,
            )
            return
        except KafkaError as exc:
            self._commit_failures += 1
            log.warning(
                "committing offsets to Kafka group %s failed (%s); retried at the next checkpoint",
                self._settings.group_id,
                exc,
            )
            return
        for tp, offset in offsets.items():
            self._committed[partition_id(tp.topic, tp.partition)] = offset.offset

    # -- rebalance -------------------------------------------------------------------

    def _checkpoint_request_timeout(self) -> float:
        session_ms = self._settings.client.get("session_timeout_ms", 10_000)
        return min(CHECKPOINT_REQUEST_TIMEOUT, float(session_ms) / 1000 / 3)

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        request: Callable[[], Awaitable[Any]] | None = getattr(self._context, "request_checkpoint", None)
        if request is not None and revoked and not self._stopped:
            try:
                # bounded well inside the group's session timeout, or the rebalance would evict us
                async with asyncio.timeout(self._checkpoint_request_timeout()):
                    await request()
            except Exception as exc:  # the checkpoint is an optimisation here, not a correctness need
                log.warning(
                    "checkpoint before rebalance failed (%s); the new owners re-read from the last commit",
                    exc,
                )
        if self._consumer is not None:
            await self._commit_durable(self._consumer, revoked)
        for tp in revoked:
            self._assigned.discard(tp)
            if tp in self._next:
                self._retained[tp] = self._next.pop(tp)
            self._time_floor.pop(tp, None)
            self._done.discard(tp)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.consumer
        first = not self._joined
        self._joined = True
        retained, self._retained = self._retained, {}
        fresh: list[TopicPartition] = []
        for tp in assigned:
            if tp in retained:
                consumer.seek(tp, retained[tp])
                self._next[tp] = retained[tp]
            else:
                fresh.append(tp)
        if fresh:
            if first:
                await self._seek_initial(consumer, fresh)
            else:
                await self._seek_takeover(consumer, fresh)
        self._assigned = set(assigned)
        log.info("Kafka group %s assigned %s", self._settings.group_id, sorted(map(str, assigned)))

    async def _seek_initial(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """First assignment of this run: StartFrom, else checkpoint, else group commit / auto.offset.reset."""
        start = self._context.start_from
        explicit = dict(start.positions) if start.kind == "positions" else {}
        pending: list[TopicPartition] = []
        for tp in partitions:
            key = partition_id(tp.topic, tp.partition)
            if key in explicit:
                self._seek(consumer, tp, int(explicit[key]))
            elif start.kind in ("checkpoint", "positions") and key in self._context.positions:
                self._seek(consumer, tp, int(self._context.positions[key]))
            else:
                pending.append(tp)
        if not pending:
            return
        if start.kind == "earliest":
            await consumer.seek_to_beginning(*pending)
        elif start.kind == "latest":
            await consumer.seek_to_end(*pending)
        elif start.kind == "timestamp" and start.timestamp is not None:
            await self._seek_time(consumer, pending, int(start.timestamp * 1000))

    async def _seek_takeover(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """A partition moved to us from another member: the newest offset known to be durable wins."""
        use_checkpoint = self._context.start_from.kind == "checkpoint"
        for tp in partitions:
            key = partition_id(tp.topic, tp.partition)
            candidates = [self._durable.get(key)]
            if use_checkpoint:
                candidates.append(self._context.positions.get(key))
            with contextlib.suppress(KafkaError):
                candidates.append(await consumer.committed(tp))
            known = [int(c) for c in candidates if c is not None]
            if known:
                self._seek(consumer, tp, max(known))

    def _seek(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        consumer.seek(tp, offset)
        self._next[tp] = offset

    async def _seek_time(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition], ms: int) -> None:
        """Seek to the first record at or after ``ms``, capped at the end offsets.

        Brokers differ: some answer a future time with offset 0 (timestamp -1),
        some give the start of a record batch rather than the exact record, and
        some under-report the end offset. So a missing or negative answer means
        "the end", and records older than the floor read after the seek are
        skipped until the first one at or after it. The floor is ``ms``, or now
        for a time in the future (records written from now on are wanted).
        """
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, ms))
        ends = await consumer.end_offsets(partitions)
        floor = min(ms, int(time.time() * 1000))
        for tp in partitions:
            answer = found.get(tp)
            end = int(ends.get(tp) or 0)
            if answer is None or answer.timestamp is None or answer.timestamp < 0:
                offset = end
            else:
                offset = min(int(answer.offset), end)
            self._seek(consumer, tp, offset)
            self._time_floor[tp] = floor

    # -- observability -----------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """Lag per partition (high watermark minus next offset) and in total, plus commit health."""
        out: dict[str, float] = {}
        total = 0
        consumer = self._consumer
        if consumer is not None:
            for tp in sorted(self._assigned):
                highwater = consumer.highwater(tp)
                position = self._next.get(tp)
                if highwater is None or position is None:
                    continue
                lag = max(0, highwater - position)
                out[f"lag.{partition_id(tp.topic, tp.partition)}"] = float(lag)
                total += lag
        out["lag"] = float(total)
        out["assignedPartitions"] = float(len(self._assigned))
        out["commitFailures"] = float(self._commit_failures)
        out["droppedRevoked"] = float(self._dropped_revoked)
        return out

    @property
    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now (for tests and diagnostics)."""
        return set(self._assigned)
