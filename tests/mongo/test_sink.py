"""The ``mongodb`` sink against a real MongoDB wire-protocol server (nx-27017)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from fluxion_connect_mongo import MongoSinkProvider, PartialWriteError
from pymongo import AsyncMongoClient

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import Batch, NonRetryableError, SinkContext
from tests.mongo.conftest import sink_config
from tests.support.mongo_server import MongoServer

Client = AsyncMongoClient[dict[str, Any]]


def make_sink(uri: str, **values: Any) -> Any:
    return MongoSinkProvider().create(SinkContext("p", "sink"), sink_config(uri, **values))


async def contents(client: Client, db: str, collection: str = "out") -> list[dict[str, Any]]:
    """The collection ordered by ``_id`` in Python (nx-27017 sorts numeric ``_id`` values as text)."""
    documents = await client[db][collection].find({}).to_list(None)
    return sorted(documents, key=lambda d: (type(d.get("_id")).__name__, d.get("_id")))


def change(operation: str, document: dict[str, Any]) -> dict[str, Any]:
    """A document as the change-stream source emits it."""
    return {**document, "_meta": {"operationType": operation, "documentKey": {"_id": document.get("_id")}}}


async def test_insert_mode_writes_documents_without_meta(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    sink = make_sink(mongo_server.uri, database=db_name, collection="out")
    await sink.open()
    try:
        batch = Batch([change("insert", {"_id": 1, "a": 1}), {"_id": 2, "a": 2}])
        await sink.write(batch)
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1, "a": 1}, {"_id": 2, "a": 2}]
    assert "_meta" in batch[0]  # the executor's batch is not modified


async def test_keep_meta_writes_meta(mongo_server: MongoServer, client: Client, db_name: str) -> None:
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode="replace", keepMeta=True)
    await sink.open()
    try:
        await sink.write(Batch([change("insert", {"_id": 1})]))
    finally:
        await sink.close()
    assert (await contents(client, db_name))[0]["_meta"]["operationType"] == "insert"


async def test_insert_mode_duplicates_fail_per_document_and_the_rest_lands(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    # 2 and 4 conflict; 3 is stored exactly as the batch has it (an earlier delivery), so it is no error.
    stored_before = [{"_id": 2, "old": True}, {"_id": 3, "new": True}, {"_id": 4, "old": True}]
    await client[db_name].out.insert_many(stored_before)
    sink = make_sink(mongo_server.uri, database=db_name, collection="out")
    await sink.open()
    try:
        with pytest.raises(PartialWriteError) as caught:
            await sink.write(Batch([{"_id": i, "new": True} for i in range(1, 6)]))
    finally:
        await sink.close()
    error = caught.value
    assert isinstance(caught.value, NonRetryableError)  # a retry cannot fix a duplicate key
    assert [doc["_id"] for doc, _ in error.failed] == [2, 4]
    assert {e.error_type for _, e in error.failed} == {"DuplicateKeyError"}
    assert error.written == 3
    stored = await contents(client, db_name)
    assert [(d["_id"], "new" in d) for d in stored] == [
        (1, True),
        (2, False),
        (3, True),
        (4, False),
        (5, True),
    ]


@pytest.mark.parametrize("mode", ["insert", "replace", "upsert"])
async def test_replaying_a_batch_changes_nothing(
    mode: str, mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    # Microseconds: the stored datetime (milliseconds) differs from the batch's own value. It is
    # nested because nx-27017 deviates from MongoDB here: a `$set` of a top-level datetime on an
    # existing document stores it as a string (nested ones stay dates), which the upsert replay hits;
    # such a `$set` also rounds a top-level double to 15 digits, so the numbers here are integers.
    at = datetime(2026, 11, 30, 12, 0, 0, 123456)
    batch = Batch(
        [change("insert", {"_id": i, "v": i * 10, "when": {"at": at}, "tags": ["a"]}) for i in range(50)],
        key="b1",
    )
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode=mode)
    await sink.open()
    try:
        await sink.write(batch)
        first = await contents(client, db_name)
        await sink.write(batch)  # the same batch again, as after a crash before the checkpoint: no error
        second = await contents(client, db_name)
    finally:
        await sink.close()
    assert len(first) == 50 and first == second
    assert sink.metrics()["failedDocuments"] == 0
    # The key is the document's own _id (nx-27017 would invent an ObjectId if the replacement lacked it).
    assert [d["_id"] for d in second] == list(range(50))


async def test_replace_mode_replaces_whole_documents(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    await client[db_name].out.insert_one({"_id": 1, "old": 1, "keep": 1})
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode="replace")
    await sink.open()
    try:
        await sink.write(Batch([{"_id": 1, "new": 1}, {"_id": 2, "new": 2}]))
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1, "new": 1}, {"_id": 2, "new": 2}]


async def test_upsert_mode_merges_fields(mongo_server: MongoServer, client: Client, db_name: str) -> None:
    await client[db_name].out.insert_one({"_id": 1, "old": 1, "v": 0})
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode="upsert")
    await sink.open()
    try:
        await sink.write(Batch([{"_id": 1, "v": 1}, {"_id": 2, "v": 2}]))
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1, "old": 1, "v": 1}, {"_id": 2, "v": 2}]


async def test_compound_key_upsert(mongo_server: MongoServer, client: Client, db_name: str) -> None:
    sink = make_sink(
        mongo_server.uri, database=db_name, collection="out", mode="upsert", keyField=["tenant", "order.id"]
    )
    await sink.open()
    try:
        await sink.write(Batch([{"tenant": "t1", "order": {"id": 7}, "v": 1}]))
        await sink.write(
            Batch([{"tenant": "t1", "order": {"id": 7}, "v": 2}, {"tenant": "t2", "order": {"id": 7}}])
        )
    finally:
        await sink.close()
    stored = await client[db_name].out.find({}, {"_id": 0}).sort("tenant", 1).to_list(None)
    assert stored == [{"tenant": "t1", "order": {"id": 7}, "v": 2}, {"tenant": "t2", "order": {"id": 7}}]


async def test_missing_key_fails_that_document_only(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode="upsert", keyField="code")
    await sink.open()
    try:
        with pytest.raises(PartialWriteError) as caught:
            await sink.write(Batch([{"code": "a"}, {"name": "no code"}, {"code": "b"}]))
    finally:
        await sink.close()
    assert [doc for doc, _ in caught.value.failed] == [{"name": "no code"}]
    assert "no key field `code`" in str(caught.value.failed[0][1])
    assert sorted(d["code"] for d in await contents(client, db_name)) == ["a", "b"]


@pytest.mark.parametrize("mode", ["insert", "replace", "upsert"])
async def test_deletes_are_applied_when_enabled(
    mode: str, mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    await client[db_name].out.insert_many([{"_id": 1}, {"_id": 2}])
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode=mode, applyDeletes=True)
    await sink.open()
    try:
        # A delete event from MongoDB has only the key; the key may also come from _meta.documentKey.
        key_only = {"_meta": {"operationType": "delete", "documentKey": {"_id": 2}}}
        await sink.write(Batch([change("delete", {"_id": 1}), key_only, change("insert", {"_id": 3})]))
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 3}]
    assert sink.metrics()["deleted"] == 2


async def test_deletes_are_skipped_when_disabled(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    await client[db_name].out.insert_one({"_id": 1, "v": 1})
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode="replace")
    await sink.open()
    try:
        await sink.write(Batch([change("delete", {"_id": 1})]))
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1, "v": 1}]
    assert sink.metrics()["deletesSkipped"] == 1


@pytest.mark.parametrize("mode", ["insert", "replace", "upsert"])
async def test_a_key_touched_twice_in_one_batch_keeps_event_order(
    mode: str, mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    # Unordered bulk writes may reorder operations (PyMongo groups them by type), so
    # insert → delete → insert of one key must still end with the document present.
    sink = make_sink(mongo_server.uri, database=db_name, collection="out", mode=mode, applyDeletes=True)
    await sink.open()
    try:
        await sink.write(
            Batch(
                [
                    change("insert", {"_id": 1, "v": 1}),
                    change("insert", {"_id": 2, "v": 1}),
                    change("delete", {"_id": 1}),
                    change("insert", {"_id": 1, "v": 2}),
                    change("delete", {"_id": 2}),
                ]
            )
        )
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1, "v": 2}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("majority", {"w": "majority"}), (1, {"w": 1}), ({"w": 1, "j": True, "wtimeout": 500}, None)],
)
def test_write_concern_values(value: Any, expected: dict[str, Any] | None) -> None:
    sink = make_sink("mongodb://127.0.0.1:1/", database="d", collection="c", writeConcern=value)
    assert sink is not None
    if expected is not None:
        from fluxion_connect_mongo._common import parse_write_concern

        config = sink_config("mongodb://127.0.0.1:1/", database="d", collection="c", writeConcern=value)
        concern = parse_write_concern(config)
        assert concern is not None and concern.document == expected


@pytest.mark.parametrize("value", [True, {"w": 1, "q": 2}, [1]])
def test_invalid_write_concern_names_the_option(value: Any) -> None:
    with pytest.raises(OptionError, match=r"sink\.writeConcern"):
        make_sink("mongodb://127.0.0.1:1/", database="d", collection="c", writeConcern=value)


async def test_write_concern_majority_is_accepted_by_the_server(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    sink = make_sink(
        mongo_server.uri, database=db_name, collection="out", mode="upsert", writeConcern="majority"
    )
    await sink.open()
    try:
        await sink.write(Batch([{"_id": 1}]))
    finally:
        await sink.close()
    assert await contents(client, db_name) == [{"_id": 1}]


def test_unknown_mode_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="mode"):
        make_sink("mongodb://127.0.0.1:1/", database="d", collection="c", mode="merge")
