"""Drain mode of the change-stream source: where a run ends, and the progress it reports.

Against nx-27017 (see test-peers.md). Deviations these tests account for:
- events are captured only from the first ``watch()`` of a collection, so the
  backlog is written while a plain ``watch()`` is open;
- the server reports no ``operationTime`` (no replica set) and stamps each
  event's ``clusterTime`` with the time it is *read*, so it offers no end
  time; the source then drains until the stream is caught up, which is what
  the first test checks. The cluster-time end used on MongoDB is checked
  against the real source by setting the end explicitly (the second test)
  and with MongoDB's Timestamps in the unit tests at the bottom.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from bson.timestamp import Timestamp
from fluxion_connect_mongo._common import to_json
from fluxion_connect_mongo.drain import DrainPlan
from fluxion_connect_mongo.events import cut_after, is_later
from pymongo import AsyncMongoClient

from fluxion_flows.spi import Document, RunMode, SourceContext, SourceProgress
from tests.mongo.conftest import read_until
from tests.mongo.test_source import make_source
from tests.support.mongo_server import MongoServer

Client = AsyncMongoClient[dict[str, Any]]


async def record_backlog(client: Client, db_name: str, keys: list[str]) -> dict[str, Any]:
    """Inserts into ``c``; the stream position from just before them."""
    coll = client[db_name].c
    async with await coll.watch() as stream:  # nx-27017 records a collection's events once it is watched
        token = stream.resume_token
        await coll.insert_many([{"_id": key} for key in keys])
    return {f"{db_name}.c": {"phase": "stream", "resumeToken": to_json(token)}}


async def drain(source: Any, *, deadline: float = 60.0) -> tuple[list[Document], dict[str, Any], list[Any]]:
    """Batches until the source ends the run: documents, last positions, progress after each batch."""
    documents: list[Document] = []
    positions: dict[str, Any] = {}
    progress: list[SourceProgress | None] = []
    limit = time.monotonic() + deadline
    while (batch := await source.next_batch(1000, 1.0)) is not None:
        assert time.monotonic() < limit, "the drain did not end"
        documents.extend(batch.documents)
        positions.update(batch.positions)
        progress.append(source.progress())
    progress.append(source.progress())
    return documents, positions, progress


async def follow(uri: str, db_name: str, positions: dict[str, Any], last: str) -> list[Any]:
    """The ``_id`` values a continuous run from ``positions`` delivers, up to the one named ``last``."""
    source = make_source(uri, SourceContext("p", positions=positions), database=db_name, collection="c")
    await source.start()
    try:
        documents, _ = await read_until(source, lambda d: d["_id"] == last)
    finally:
        await source.close()
    return [d["_id"] for d in documents]


def assert_rising_to_one(progress: list[SourceProgress | None]) -> None:
    fractions = [p.fraction for p in progress if p is not None]
    assert fractions and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    assert all(0.0 <= p.consumed <= p.target for p in progress if p is not None and p.target > 0)


async def test_drain_reads_the_backlog_and_the_next_run_continues_after_it(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    backlog = [f"b{i:04d}" for i in range(300)]
    positions = await record_backlog(client, db_name, backlog)
    source = make_source(
        mongo_server.uri,
        SourceContext("p", positions=positions, mode=RunMode.DRAIN),
        database=db_name,
        collection="c",
        maxBatchSize=20,
        maxAwaitTime="PT0.2S",
    )
    await source.start()
    try:
        assert source.drain_plan is not None and source.drain_plan.end is None  # DEVIATION: no operationTime
        drained, drained_positions, progress = await drain(source)
    finally:
        await source.close()
    assert [d["_id"] for d in drained] == backlog
    # No end known: no progress until the run is complete, then all of it.
    assert all(p is None for p in progress[:-1])
    assert progress[-1] is not None and progress[-1].fraction == 1.0

    await client[db_name].c.insert_many([{"_id": "after"}, {"_id": "marker"}])
    assert await follow(mongo_server.uri, db_name, drained_positions, "marker") == ["after", "marker"]


async def test_the_first_event_after_the_end_ends_the_run_undelivered(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    backlog = [f"b{i}" for i in range(5)]
    positions = await record_backlog(client, db_name, backlog)
    source = make_source(
        mongo_server.uri,
        SourceContext("p", positions=positions, mode=RunMode.DRAIN),
        database=db_name,
        collection="c",
        maxAwaitTime="PT0.2S",
    )
    await source.start()  # the poll task has not run yet: it starts at the next await
    try:
        plan = source.drain_plan
        assert plan is not None
        plan.end = Timestamp(1, 1)  # as if the run had started before every one of these events
        drained, drained_positions, progress = await drain(source)
    finally:
        await source.close()
    assert drained == [] and drained_positions == {}
    assert progress[-1] is not None and progress[-1].fraction == 1.0
    # Nothing was skipped: the next run still starts before the first event.
    assert await follow(mongo_server.uri, db_name, positions, "b4") == backlog


async def test_drain_progress_counts_snapshot_documents_then_ends_at_one(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    keys = [f"d{i:02d}" for i in range(30)]  # DEVIATION: nx-27017 sorts numeric _ids >= 10 as text
    await client[db_name].c.insert_many([{"_id": key} for key in keys])
    source = make_source(
        mongo_server.uri,
        SourceContext("p", mode=RunMode.DRAIN),
        database=db_name,
        collection="c",
        initialSnapshot=True,
        maxBatchSize=10,
        maxAwaitTime="PT0.2S",
    )
    await source.start()
    try:
        assert source.progress() == SourceProgress(0.0, 30.0)
        documents, _, progress = await drain(source)
    finally:
        await source.close()
    assert [d["_id"] for d in documents] == keys
    assert SourceProgress(10.0, 30.0) in progress
    assert_rising_to_one(progress)


async def test_continuous_mode_reports_no_progress(
    mongo_server: MongoServer, client: Client, db_name: str
) -> None:
    source = make_source(mongo_server.uri, database=db_name, collection="c")
    await source.start()
    try:
        await client[db_name].c.insert_one({"_id": 1})
        documents, _ = await read_until(source, lambda d: d["_id"] == 1)
        assert documents and source.progress() is None
    finally:
        await source.close()


# -- without a server: MongoDB's Timestamp cluster times ---------------------------------------------------


def test_cut_keeps_the_events_up_to_the_end_timestamp() -> None:
    events = [{"clusterTime": Timestamp(100, i)} for i in range(1, 6)] + [{"clusterTime": Timestamp(101, 1)}]
    assert cut_after(events, Timestamp(100, 3)) == 3
    assert cut_after(events, Timestamp(100, 0)) == 0
    assert cut_after(events, Timestamp(101, 1)) == 6
    assert cut_after([], Timestamp(1, 1)) == 0


def test_cut_compares_datetimes_and_mixed_clocks_in_seconds() -> None:
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    events = [{"clusterTime": start + dt.timedelta(milliseconds=ms)} for ms in (0, 5, 10)]
    assert cut_after(events, start + dt.timedelta(milliseconds=5)) == 2
    assert is_later(Timestamp(int(start.replace(tzinfo=dt.UTC).timestamp()) + 1, 1), start)
    assert not is_later(None, start)  # an event without a cluster time is never past the end


def test_drain_plan_progress_in_cluster_time_seconds() -> None:
    plan = DrainPlan(Timestamp(1_000, 1))
    assert plan.progress(None) is None  # nothing read yet: the start is unknown
    plan.read(Timestamp(900, 1), Timestamp(950, 7))
    assert plan.progress(None) == SourceProgress(50.0, 100.0)
    plan.read(Timestamp(990, 1), Timestamp(1_000, 1))
    assert plan.progress(None) == SourceProgress(100.0, 100.0)
    plan.finished = True
    assert plan.progress(None) == SourceProgress(100.0, 100.0)
    assert plan.progress(5) == SourceProgress(5.0, 5.0)  # snapshot phase: documents


def test_a_drain_with_nothing_to_read_is_complete() -> None:
    plan = DrainPlan(None)
    assert plan.progress(None) is None
    plan.finished = True
    progress = plan.progress(None)
    assert progress is not None and progress.fraction == 1.0
