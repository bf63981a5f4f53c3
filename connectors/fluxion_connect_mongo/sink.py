"""The ``mongodb`` sink: insert, replace or upsert documents with unordered bulk writes.

Modes:

- ``insert``: ``InsertOne``; a duplicate key fails that document only, unless
  the stored document is exactly the one being inserted: that is a replay of
  our own earlier write (a batch resent after a reconnect, or redelivered
  after a crash), so it counts as written and a replay changes nothing.
- ``replace``: ``ReplaceOne(key, document, upsert=True)``: the target becomes
  exactly the incoming document.
- ``upsert``: ``UpdateOne(key, {$set: document}, upsert=True)``: the incoming
  fields are merged into the target, which is created if missing.

The key (``keyField``, ``_id`` by default, a list for a compound key) is always
part of the written document as well as of the filter, so replaying a batch
after a crash rewrites the same documents and changes nothing. (Some
MongoDB-compatible servers otherwise give an upserted document a fresh
ObjectId.)

Delete events (``_meta.operationType: delete``) become ``DeleteOne`` when
``applyDeletes`` is on and are skipped otherwise. ``_meta`` itself is not
written unless ``keepMeta`` is on.

Unordered bulk writes may run operations in any order (PyMongo even groups
them by type), so a batch touching one key twice is split into consecutive
bulk writes in which each key appears once; in ``replace`` mode only the
last operation per key matters and the others are dropped first.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson.objectid import ObjectId
from pymongo import AsyncMongoClient, DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.results import BulkWriteResult

from fluxion_connect_mongo._common import (
    CONNECTION_OPTION,
    DATABASE_OPTION,
    RECONNECT_OPTION,
    check_connection_string,
    key_fields,
    make_client,
    option_path,
    parse_write_concern,
    retry_unreachable,
)
from fluxion_connect_mongo.catalog import discover
from fluxion_connect_mongo.errors import DUPLICATE_KEY_CODES, DocumentWriteError, PartialWriteError
from fluxion_flows.errors import OptionError
from fluxion_flows.spi import (
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    Document,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    StreamDescriptor,
    StreamingSink,
)

MODES = ("insert", "replace", "upsert")
WriteOp = InsertOne[Document] | ReplaceOne[Document] | UpdateOne | DeleteOne
_MISSING = object()


class MongoSinkProvider(SinkProvider):
    """Factory for the ``mongodb`` sink."""

    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            "mongodb",
            "MongoDB collection",
            "Inserts, replaces or upserts documents by key with unordered bulk writes; can apply deletes",
        )

    def options(self) -> OptionSchema:
        return OptionSchema(
            options=[
                CONNECTION_OPTION,
                DATABASE_OPTION,
                ConnectorOption(
                    "collection", OptionType.STRING, required=True, description="target collection"
                ),
                ConnectorOption(
                    "mode", OptionType.ENUM, default="insert", choices=MODES, description="write mode"
                ),
                ConnectorOption(
                    "keyField",
                    OptionType.ANY,
                    default="_id",
                    description="field identifying a document (dotted paths allowed; a list: compound key)",
                ),
                ConnectorOption(
                    "applyDeletes",
                    OptionType.BOOL,
                    default=False,
                    description="apply delete events as deletes",
                ),
                ConnectorOption(
                    "writeConcern",
                    OptionType.ANY,
                    description='"majority", a node count, or {w, j, wtimeout}',
                ),
                ConnectorOption("keepMeta", OptionType.BOOL, default=False, description="also write `_meta`"),
                ConnectorOption(
                    "batchSize", OptionType.INT, default=1000, description="most operations per bulk"
                ),
                RECONNECT_OPTION,
            ]
        )

    def create(self, context: SinkContext, config: ConnectorConfig) -> MongoSink:
        if config["batchSize"] < 1:
            raise OptionError("option `batchSize` must be at least 1", path=option_path(config, "batchSize"))
        check_connection_string(config)
        parse_write_concern(config)  # fail at creation, not at the first write
        return MongoSink(context, config, key_fields(config))

    async def discover_streams(self, config: ConnectorConfig) -> list[StreamDescriptor]:
        return await discover(config)


@dataclass(slots=True)
class _Planned:
    """One bulk operation and the batch document it came from (to route its failure back)."""

    op: WriteOp
    source: Document
    identity: Hashable | None
    inserted: Document | None = None


class MongoSink(StreamingSink):
    """Writes batches to one collection; ``write`` returns after the bulk writes are acknowledged."""

    def __init__(self, context: SinkContext, config: ConnectorConfig, keys: tuple[str, ...]) -> None:
        self._context = context
        self._config = config
        self._mode: str = config["mode"]
        self._keys = keys
        self._apply_deletes: bool = config["applyDeletes"]
        self._keep_meta: bool = config["keepMeta"]
        self._batch_size: int = config["batchSize"]
        self._reconnect: float = config["reconnectTimeout"]
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._collection: AsyncCollection[dict[str, Any]] | None = None
        self._counters = {
            "inserted": 0,
            "upserted": 0,
            "matched": 0,
            "modified": 0,
            "deleted": 0,
            "deletesSkipped": 0,
            "failedDocuments": 0,
            "bulkWrites": 0,
        }

    async def open(self) -> None:
        self._client = make_client(self._config)
        collection = self._client[self._config["database"]][self._config["collection"]]
        concern = parse_write_concern(self._config)
        self._collection = (
            collection.with_options(write_concern=concern) if concern is not None else collection
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in self._counters.items()}

    # -- write -----------------------------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        if self._collection is None:
            await self.open()
        failed: list[tuple[Document, DocumentWriteError]] = []
        planned = self._plan(batch, failed)
        written = 0
        for segment in _segments(planned, self._batch_size):
            written += await self._bulk(segment, failed)
        if failed:
            self._counters["failedDocuments"] += len(failed)
            raise PartialWriteError(failed, written)

    async def _bulk(self, segment: list[_Planned], failed: list[tuple[Document, DocumentWriteError]]) -> int:
        """One unordered bulk write; per-document errors are collected, the rest of the segment is durable.

        While the server is unreachable the same bulk is sent again (see
        ``retry_unreachable``); replaces, upserts and deletes by key rewrite the
        same state, and an insert refused as a duplicate of an identical stored
        document is our own earlier insert, so it counts as written.
        """
        collection = self._collection
        assert collection is not None
        operations = [p.op for p in segment]

        async def attempt() -> BulkWriteResult:
            self._counters["bulkWrites"] += 1
            return await collection.bulk_write(operations, ordered=False)

        try:
            result = await retry_unreachable(
                attempt,
                what=f"write to {self._config['database']}.{self._config['collection']}",
                budget=self._reconnect,
                logger=self._context.logger,
                secret=self._config["connectionString"],
            )
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                raise  # durability unknown for the whole segment: let the policy retry it
            errors = await self._without_own_inserts(details.get("writeErrors", []), segment)
            for error in errors:
                index = int(error.get("index", -1))
                if 0 <= index < len(segment):
                    failed.append((segment[index].source, DocumentWriteError.from_write_error(error, index)))
            self._count(details)
            return len(segment) - len(errors)
        self._count(_result_counts(result))
        return len(segment)

    async def _without_own_inserts(
        self, errors: list[Mapping[str, Any]], segment: list[_Planned]
    ) -> list[Mapping[str, Any]]:
        """The write errors left once duplicate-key refusals of documents already stored as-is are dropped.

        One ``find`` by ``_id`` for the refused inserts, only when there are
        any; a different stored document (a real conflict) stays an error.
        """
        refused = {
            index: body
            for error in errors
            if error.get("code") in DUPLICATE_KEY_CODES
            and 0 <= (index := _error_index(error)) < len(segment)
            and (body := segment[index].inserted) is not None
            and "_id" in body
        }
        if not refused:
            return errors
        collection = self._collection
        assert collection is not None
        ids = [body["_id"] for body in refused.values()]
        stored = {_identity({"_id": d["_id"]}): d async for d in collection.find({"_id": {"$in": ids}})}
        options = collection.codec_options
        own = {
            index
            for index, body in refused.items()
            if stored.get(_identity({"_id": body["_id"]}))
            == bson.decode(bson.encode(body, codec_options=options), codec_options=options)
        }
        return [e for e in errors if _error_index(e) not in own]

    def _count(self, details: Mapping[str, Any]) -> None:
        for name, field in (
            ("inserted", "nInserted"),
            ("upserted", "nUpserted"),
            ("matched", "nMatched"),
            ("modified", "nModified"),
            ("deleted", "nRemoved"),
        ):
            self._counters[name] += int(details.get(field) or 0)

    # -- planning --------------------------------------------------------------------------------------------

    def _plan(
        self, batch: Sequence[Document], failed: list[tuple[Document, DocumentWriteError]]
    ) -> list[_Planned]:
        planned: list[_Planned] = []
        for document in batch:
            try:
                step = self._plan_one(document)
            except DocumentWriteError as error:
                failed.append((document, error))
                continue
            if step is not None:
                planned.append(step)
        if self._mode == "replace":
            planned = _last_per_key(planned)
        return planned

    def _plan_one(self, document: Document) -> _Planned | None:
        if not isinstance(document, dict):
            raise DocumentWriteError(f"expected a document (map), found {type(document).__name__}")
        meta = document.get("_meta")
        if isinstance(meta, dict) and meta.get("operationType") == "delete":
            if not self._apply_deletes:
                self._counters["deletesSkipped"] += 1
                return None
            target = self._delete_filter(document, meta)
            return _Planned(DeleteOne(target), document, _identity(target))
        if self._mode == "upsert":
            key = self._key(document, required=True)
            assert key is not None
            return _Planned(
                UpdateOne(key, self._upsert_update(document), upsert=True), document, _identity(key)
            )
        # A copy in any case: InsertOne adds an _id to the dict it is given, and the batch stays intact.
        skip = () if self._keep_meta else ("_meta",)
        body = {name: value for name, value in document.items() if name not in skip}
        if self._mode == "insert":
            found = self._key(body, required=False)
            return _Planned(InsertOne(body), document, _identity(found) if found else None, inserted=body)
        key = self._key(body, required=True)
        assert key is not None
        return _Planned(ReplaceOne(key, body, upsert=True), document, _identity(key))

    def _upsert_update(self, document: Document) -> dict[str, Any]:
        """``$set`` every field; ``_id`` goes in ``$setOnInsert`` (an existing ``_id`` is immutable)."""
        skip = ("_id",) if self._keep_meta else ("_id", "_meta")
        fields = {name: value for name, value in document.items() if name not in skip}
        update: dict[str, Any] = {}
        if fields:
            update["$set"] = fields
        if "_id" in document:
            update["$setOnInsert"] = {"_id": document["_id"]}
        if not update:
            raise DocumentWriteError("the document has no fields to write")
        return update

    def _key(self, body: Document, *, required: bool) -> dict[str, Any] | None:
        key: dict[str, Any] = {}
        for name in self._keys:
            value = body.get(name, _MISSING) if "." not in name else _lookup(body, name)
            if value is _MISSING:
                if required:
                    raise DocumentWriteError(f"the document has no key field `{name}`")
                return None
            key[name] = value
        return key

    def _delete_filter(self, document: Document, meta: dict[str, Any]) -> dict[str, Any]:
        """The key of the deleted document, from the root or else from ``_meta.documentKey``."""
        key = self._key(document, required=False)
        if key is not None:
            return key
        document_key = meta.get("documentKey")
        if isinstance(document_key, dict) and document_key:
            return dict(document_key)
        raise DocumentWriteError(f"the delete event has no key field {', '.join(self._keys)}")


def _error_index(error: Mapping[str, Any]) -> int:
    return int(error.get("index", -1))


def _lookup(document: Document, path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _identity(key: dict[str, Any]) -> Hashable:
    """A key's identity as the server compares it: 1 and 1.0 are one key, 1 and "1" or True are not."""
    if len(key) == 1:
        (value,) = key.values()
        kind = type(value)
        if kind is int or kind is float:
            return ("number", value)
        if kind is str or kind is ObjectId or kind is bool:
            return (kind, value)
    return bson.encode(key)


def _last_per_key(planned: list[_Planned]) -> list[_Planned]:
    """Replace mode: only the last operation on a key decides its final state."""
    last: dict[Hashable, int] = {}
    for index, step in enumerate(planned):
        if step.identity is not None:
            last[step.identity] = index
    return [s for i, s in enumerate(planned) if s.identity is None or last[s.identity] == i]


def _segments(planned: list[_Planned], size: int) -> Iterator[list[_Planned]]:
    """Consecutive runs of at most ``size`` operations in which no key repeats (order-safe when unordered)."""
    segment: list[_Planned] = []
    seen: set[Hashable] = set()
    for step in planned:
        if len(segment) >= size or (step.identity is not None and step.identity in seen):
            yield segment
            segment, seen = [], set()
        segment.append(step)
        if step.identity is not None:
            seen.add(step.identity)
    if segment:
        yield segment


def _result_counts(result: BulkWriteResult) -> dict[str, Any]:
    return {
        "nInserted": result.inserted_count,
        "nUpserted": result.upserted_count,
        "nMatched": result.matched_count,
        "nModified": result.modified_count,
        "nRemoved": result.deleted_count,
    }
