"""The ``mongodb`` source: change streams, with an optional resumable initial snapshot.

Each change event becomes one document: the full document (when the event
has one) at the root, so ``_id`` stays the business key, and ``_meta`` with
``operationType``, ``documentKey``, ``clusterTime``, ``ns`` and the event's
``resumeToken``. Delete events carry the document key at the root.

Positions (one partition per watched namespace, ``"<db>.<coll>"`` or
``"<db>"`` for a database-wide stream) look like::

    {"phase": "stream",   "resumeToken": {...}}
    {"phase": "snapshot", "resumeToken": {...}, "lastId": <Extended JSON _id>}

The snapshot phase records the resume token taken *before* the copy began and
the last copied ``_id``: a restart continues the copy after that ``_id``
and then follows the change stream from the token, so a write that raced the
copy is replayed from the stream rather than lost.

Reading a server reply and turning it into documents is in ``events.py``;
where a drain-mode run ends and its progress, in ``drain.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from bson.timestamp import Timestamp
from pymongo import AsyncMongoClient
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure, PyMongoError

from fluxion_connect_mongo._common import (
    CONNECTION_OPTION,
    DATABASE_OPTION,
    RECONNECT_OPTION,
    check_connection_string,
    from_json,
    make_client,
    option_path,
    retry_unreachable,
    to_json,
)
from fluxion_connect_mongo.catalog import discover
from fluxion_connect_mongo.drain import DrainPlan, cluster_time
from fluxion_connect_mongo.errors import as_resume_error
from fluxion_connect_mongo.events import (
    cut_after,
    event_time,
    events_to_documents,
    read_batch,
)
from fluxion_connect_mongo.snapshot import SnapshotReader
from fluxion_flows.errors import OptionError
from fluxion_flows.spi import (
    AbstractAsyncStreamingSource,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    Document,
    OptionSchema,
    OptionType,
    SourceBatch,
    SourceContext,
    SourceProgress,
    SourceProvider,
    StreamDescriptor,
)

CHANGE_STREAM_STAGES = frozenset(
    {"$addFields", "$match", "$project", "$replaceRoot", "$replaceWith", "$redact", "$set", "$unset"}
)
FULL_DOCUMENT_MODES = ("default", "updateLookup", "whenAvailable", "required")


class MongoSourceProvider(SourceProvider):
    """Factory for the ``mongodb`` change-stream source."""

    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            "mongodb",
            "MongoDB change stream",
            "Change events of a collection (or a database) as documents; resume tokens are the checkpoint",
        )

    def options(self) -> OptionSchema:
        return OptionSchema(
            options=[
                CONNECTION_OPTION,
                DATABASE_OPTION,
                ConnectorOption(
                    "collection",
                    OptionType.STRING,
                    description="collection to watch; omit to watch the whole database (server permitting)",
                ),
                ConnectorOption(
                    "pipeline",
                    OptionType.LIST,
                    default=[],
                    description="change-stream stages ($match, $project, $addFields, $set, $unset, ...)",
                ),
                ConnectorOption(
                    "fullDocument",
                    OptionType.ENUM,
                    default="updateLookup",
                    choices=FULL_DOCUMENT_MODES,
                    description="how update events carry the document; `default` gives only the key",
                ),
                ConnectorOption("queueCapacity", OptionType.INT, default=64, description="batches buffered"),
                ConnectorOption("maxBatchSize", OptionType.INT, default=128, description="events per batch"),
                ConnectorOption(
                    "maxAwaitTime", OptionType.DURATION, default="PT5S", description="server wait per getMore"
                ),
                ConnectorOption(
                    "initialSnapshot",
                    OptionType.BOOL,
                    default=False,
                    description="copy existing documents (resumably, by _id) before following changes",
                ),
                RECONNECT_OPTION,
            ]
        )

    def create(self, context: SourceContext, config: ConnectorConfig) -> MongoChangeStreamSource:
        check_connection_string(config)
        settings = SourceSettings.from_config(config)
        return MongoChangeStreamSource(context, config, settings)

    async def discover_streams(self, config: ConnectorConfig) -> list[StreamDescriptor]:
        return await discover(config)


class SourceSettings:
    """The validated options of one source block."""

    def __init__(
        self,
        *,
        database: str,
        collection: str | None,
        pipeline: list[dict[str, Any]],
        full_document: str,
        queue_capacity: int,
        max_batch_size: int,
        max_await_time: float,
        initial_snapshot: bool,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self.database = database
        self.collection = collection
        self.pipeline = pipeline
        self.full_document = full_document
        self.queue_capacity = queue_capacity
        self.max_batch_size = max_batch_size
        self.max_await_time = max_await_time
        self.initial_snapshot = initial_snapshot
        self.reconnect_timeout = reconnect_timeout

    @property
    def namespace(self) -> str:
        return f"{self.database}.{self.collection}" if self.collection else self.database

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> SourceSettings:
        for name in ("queueCapacity", "maxBatchSize"):
            if config[name] < 1:
                raise OptionError(f"option `{name}` must be at least 1", path=option_path(config, name))
        collection = config.get("collection") or None
        initial_snapshot = bool(config["initialSnapshot"])
        if initial_snapshot and collection is None:
            raise OptionError(
                "option `initialSnapshot` needs a `collection` (a database-wide snapshot is not supported)",
                path=option_path(config, "initialSnapshot"),
            )
        return cls(
            database=config["database"],
            collection=collection,
            pipeline=validate_pipeline(config["pipeline"], config),
            full_document=config["fullDocument"],
            queue_capacity=config["queueCapacity"],
            max_batch_size=config["maxBatchSize"],
            max_await_time=config["maxAwaitTime"],
            initial_snapshot=initial_snapshot,
            reconnect_timeout=config["reconnectTimeout"],
        )


def validate_pipeline(pipeline: Sequence[Any], config: ConnectorConfig) -> list[dict[str, Any]]:
    """The change-stream pipeline, checked stage by stage (a server would only say 'invalid pipeline')."""
    checked: list[dict[str, Any]] = []
    for index, stage in enumerate(pipeline):
        where = option_path(config, "pipeline", index)
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise OptionError(
                "a change-stream stage must be a map with exactly one `$operator` key", path=where
            )
        (name,) = stage.keys()
        if name not in CHANGE_STREAM_STAGES:
            raise OptionError(
                f"`{name}` is not allowed in a change-stream pipeline",
                path=(*where, name),
                found=str(name),
                valid=CHANGE_STREAM_STAGES,
            )
        checked.append({name: stage[name]})
    return checked


def snapshot_document(document: Document, namespace: Mapping[str, str]) -> Document:
    """An existing document copied by the initial snapshot (``operationType: snapshot``)."""
    document["_meta"] = {
        "operationType": "snapshot",
        "documentKey": {"_id": document.get("_id")},
        "clusterTime": None,
        "ns": dict(namespace),
        "resumeToken": None,
    }
    return document


class MongoChangeStreamSource(AbstractAsyncStreamingSource):
    """Reads one change stream; in ``snapshot`` phase first pages through the existing documents."""

    def __init__(self, context: SourceContext, config: ConnectorConfig, settings: SourceSettings) -> None:
        super().__init__(settings.queue_capacity)
        self._context = context
        self._config = config
        self._settings = settings
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._stream: AsyncChangeStream[dict[str, Any]] | None = None
        self._snapshot: SnapshotReader | None = None
        self._snapshot_token: Any = None
        self._last_token: Any = None
        self._emitted_token: Any = None
        self._events = 0
        self._lag: float | None = None
        self._drain: DrainPlan | None = None
        self.partition = settings.namespace

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        self._client = make_client(self._config)
        position = self._start_position()
        start = self._context.start_from
        if start.kind == "latest":
            await self._open_stream()
        elif start.kind == "earliest" or (position is None and self._settings.initial_snapshot):
            await self._begin_snapshot()
        elif start.kind == "timestamp" and start.timestamp is not None:
            await self._open_stream(start_at=start.timestamp)
        elif position is None:
            await self._open_stream()
        elif position.get("phase") == "snapshot":
            await self._resume_snapshot(position)
        else:
            await self._open_stream(resume_after=from_json(position["resumeToken"]))
        if self._context.drain:
            await self._plan_drain()
        self._context.logger.info("mongodb source on %s opened (%s)", self.partition, self._phase)

    @property
    def watching(self) -> bool:
        """True once the change stream is open: writes from now on are captured (or snapshotted)."""
        return self._stream is not None

    @property
    def _phase(self) -> str:
        return "snapshot" if self._snapshot is not None else "stream"

    def _start_position(self) -> dict[str, Any] | None:
        start = self._context.start_from
        positions = start.positions if start.kind == "positions" else self._context.positions
        position = positions.get(self.partition)
        if position is not None and not isinstance(position, Mapping):
            raise OptionError(f"the checkpointed position of `{self.partition}` is not a Mongo position")
        return dict(position) if position is not None else None

    async def on_close(self) -> None:
        if self._snapshot is not None:
            await self._snapshot.close()
        if self._stream is not None:
            try:
                await self._stream.close()
            except PyMongoError as exc:
                self._context.logger.debug("closing the change stream failed: %s", exc)
            self._stream = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    # -- change stream ---------------------------------------------------------------------------------------

    async def _open_stream(
        self, *, resume_after: Any = None, start_after: Any = None, start_at: float | None = None
    ) -> None:
        assert self._client is not None
        settings = self._settings
        database = self._client[settings.database]
        target = database[settings.collection] if settings.collection else database
        options: dict[str, Any] = {
            "max_await_time_ms": max(1, int(settings.max_await_time * 1000)),
            "batch_size": settings.max_batch_size,
        }
        if settings.full_document != "default":
            options["full_document"] = settings.full_document
        if resume_after is not None:
            options["resume_after"] = resume_after
        if start_after is not None:
            options["start_after"] = start_after
        if start_at is not None:
            options["start_at_operation_time"] = Timestamp(int(start_at), 0)
        try:
            self._stream = await target.watch(settings.pipeline, **options)
        except OperationFailure as exc:
            self._raise_translated(exc)
        self._last_token = self._stream.resume_token or resume_after or start_after
        if self._emitted_token is None:
            self._emitted_token = self._last_token

    def _raise_translated(self, exc: OperationFailure) -> NoReturn:
        """'History lost' becomes ResumeTokenLostError (never a silent skip); anything else propagates."""
        lost = as_resume_error(exc, self.partition)
        if lost is not None:
            raise lost from None
        raise exc

    async def _read_events(self) -> list[dict[str, Any]]:
        """Up to ``maxBatchSize`` events: one server round trip, then what it buffered (see ``events.py``).

        Events are returned as the server sent them; ``next_batch`` turns them
        into documents, so that work overlaps the next ``getMore`` this poll
        task has in flight.
        """
        if self._stream is None:  # dropped with its connection: continue after the last event read
            await self._open_stream(resume_after=self._last_token)
        stream = self._stream
        assert stream is not None
        if not stream.alive:
            await self._reopen_after_invalidate()
            stream = self._stream
            assert stream is not None
        try:
            events = await read_batch(stream, self._settings.max_batch_size)
        except OperationFailure as exc:
            self._raise_translated(exc)
        self._last_token = stream.resume_token or self._last_token
        return events

    async def _reopen_after_invalidate(self) -> None:
        """After ``invalidate`` (drop/rename), keep watching the namespace from just after that event."""
        old = self._stream
        if old is not None:
            await old.close()
        await self._open_stream(start_after=self._last_token)

    # -- initial snapshot ------------------------------------------------------------------------------------

    async def _begin_snapshot(self) -> None:
        """Open the change stream first (its token marks where the copy began), then copy by ``_id``."""
        await self._open_stream()
        token = self._stream.resume_token if self._stream is not None else None
        if token is None:
            raise RuntimeError(
                f"the server gave no resume token for {self.partition}; an initial snapshot cannot be "
                "made resumable without one"
            )
        self._snapshot_token = token
        self._snapshot = self._reader()

    async def _resume_snapshot(self, position: Mapping[str, Any]) -> None:
        token = from_json(position["resumeToken"])
        await self._open_stream(resume_after=token)
        self._snapshot_token = token
        last = position.get("lastId")
        self._snapshot = self._reader(
            last_id=from_json(last) if last is not None else None, started=last is not None
        )

    def _reader(self, *, last_id: Any = None, started: bool = False) -> SnapshotReader:
        assert self._client is not None and self._settings.collection is not None
        collection = self._client[self._settings.database][self._settings.collection]
        return SnapshotReader(collection, self._settings.max_batch_size, last_id=last_id, started=started)

    async def _poll_snapshot(self, reader: SnapshotReader) -> SourceBatch:
        page = await reader.next_page()
        if not page:
            self._snapshot = None
            self._context.logger.info(
                "initial snapshot of %s complete (%d documents); following changes",
                self.partition,
                reader.copied,
            )
            self._emitted_token = self._snapshot_token
            return SourceBatch([], {self.partition: self._stream_position(self._snapshot_token)})
        namespace = {"db": self._settings.database, "coll": self._settings.collection or ""}
        documents = [snapshot_document(doc, namespace) for doc in page]
        position = {
            "phase": "snapshot",
            "resumeToken": to_json(self._snapshot_token),
            "lastId": to_json(reader.last_id),
        }
        return SourceBatch(documents, {self.partition: position})

    # -- poll ------------------------------------------------------------------------------------------------

    async def poll(self) -> SourceBatch | None:
        return await retry_unreachable(
            self._poll_once,
            what=f"read {self.partition}",
            budget=self._settings.reconnect_timeout,
            logger=self._context.logger,
            secret=self._config["connectionString"],
            on_retry=self._drop_connection_state,
        )

    async def _drop_connection_state(self) -> None:
        """After a lost connection: reopen the snapshot cursor after the last ``_id`` and the change stream
        after the last event read (nothing read since then was handed on)."""
        if self._snapshot is not None:
            await self._snapshot.drop_cursor()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await stream.close()
            except PyMongoError as exc:
                self._context.logger.debug("closing the change stream failed: %s", exc)

    async def _poll_once(self) -> SourceBatch | None:
        if self._snapshot is not None:
            return await self._poll_snapshot(self._snapshot)
        drain = self._drain
        if drain is not None and drain.finished:
            return None
        events = await self._read_events()
        token = self._last_token
        if drain is not None and drain.end is not None and events:
            keep = cut_after(events, drain.end)
            if keep < len(events):  # the backlog ends inside this batch: stop before the first later event
                drain.finished = True
                if keep == 0:
                    return None
                events = events[:keep]
                token = self._last_token = events[-1]["_id"]
        if events:
            self._note_read(events)
            self._emitted_token = token
            return _RawEvents(events, {self.partition: self._stream_position(token)})
        self._lag = 0.0  # caught up
        if drain is not None:
            drain.finished = True
            return None
        if token is not None and token != self._emitted_token:
            # The server moved the token past filtered-out events: checkpoint it so it never ages out.
            self._emitted_token = token
            return SourceBatch([], {self.partition: self._stream_position(token)})
        return SourceBatch([])

    def _note_read(self, events: list[dict[str, Any]]) -> None:
        """Lag (and drain progress) from the cluster times of a batch's first and last event."""
        last = events[-1].get("clusterTime")
        seconds = event_time(last)
        self._lag = max(0.0, time.time() - seconds) if seconds is not None else None
        if self._drain is not None:
            self._drain.read(events[0].get("clusterTime"), last)

    async def next_batch(self, max_documents: int, timeout: float) -> SourceBatch | None:
        batch = await super().next_batch(max_documents, timeout)
        if isinstance(batch, _RawEvents):
            batch.documents = events_to_documents(batch.documents, self._context.logger, self.partition)
            self._events += len(batch.documents)
        return batch

    # -- drain -----------------------------------------------------------------------------------------------

    async def _plan_drain(self) -> None:
        """The drain ends at the cluster time now (see ``drain.py``); a snapshot counts the collection."""
        assert self._client is not None
        database = self._client[self._settings.database]
        self._drain = DrainPlan(await cluster_time(database))
        if self._drain.end is None:
            self._context.logger.info(
                "the server reports no cluster time: the drain of %s ends when the stream is caught up",
                self.partition,
            )
        if self._snapshot is not None and self._settings.collection is not None:
            self._drain.snapshot_total = await database[self._settings.collection].estimated_document_count()

    @property
    def drain_plan(self) -> DrainPlan | None:
        """Where this drain-mode run ends (None in continuous mode)."""
        return self._drain

    def progress(self) -> SourceProgress | None:
        if self._drain is None:
            return None
        return self._drain.progress(self._snapshot.copied if self._snapshot is not None else None)

    @staticmethod
    def _stream_position(token: Any) -> dict[str, Any]:
        return {"phase": "stream", "resumeToken": to_json(token)}

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"events": float(self._events)}
        if self._snapshot is not None:
            values["snapshotDocuments"] = float(self._snapshot.copied)
        if self._lag is not None:
            values["lag"] = self._lag  # seconds between the last event's cluster time and reading it
        return values


class _RawEvents(SourceBatch):
    """A batch whose ``documents`` are still raw change events (converted in ``next_batch``)."""

    __slots__ = ()
