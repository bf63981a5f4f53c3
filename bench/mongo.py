"""Benchmark: the MongoDB sink and source vs plain PyMongo async loops, same server, same run.

Against nx-27017 (``--data-dir`` on disk, or ``memory`` with ``--memory``; a free port):

- ``mongo-sink``: 50k documents in batches of 500 (the executor's default
  micro-batch) written by ``MongoSink`` in ``upsert`` mode vs a plain
  ``AsyncCollection.bulk_write`` loop sending the very same ``UpdateOne``
  upserts unordered, one batch at a time. Each round writes into a fresh
  collection.
- ``mongo-source``: change events read through ``MongoChangeStreamSource``
  (resuming from a token, as after a restart) vs a plain ``watch()`` loop
  (own client, ``resume_after`` the same token, ``try_next`` until the same
  count; both timings include connecting and opening the stream). Each
  round reads a freshly recorded collection of the same events, so neither
  side waits for a writer. (nx-27017 prunes change history that every open
  stream has passed, keeping 1000 rows, so a history can be replayed once.)

Rounds interleave A and B, alternating which goes first (A B, B A, ...) so
server-side drift (SQLite growth, WAL checkpoints) does not favour either
side, and the medians are compared. The last lines are
one JSON object per workload (DESIGN.md).

    .venv/bin/python bench/mongo.py [--docs 50000] [--events 30000] [--batch 500] [--rounds 7] [--memory]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "connectors"))

from fluxion_connect_mongo import MongoSinkProvider, MongoSourceProvider  # noqa: E402
from pymongo import AsyncMongoClient, UpdateOne  # noqa: E402

from fluxion_flows.spi import Batch, ConnectorConfig, ConnectorKind, SinkContext, SourceContext  # noqa: E402
from tests.support.mongo_server import running_mongo  # noqa: E402

Client = AsyncMongoClient[dict[str, Any]]
DB = "bench"


def documents(total: int) -> list[dict[str, Any]]:
    return [
        {
            "_id": f"o-{i:08d}",
            "customer": {"id": i % 977, "tier": ("gold", "silver", "bronze")[i % 3]},
            "total": round(10 + (i % 500) * 1.37, 2),
            "status": "processed",
            "_meta": {"operationType": "insert", "documentKey": {"_id": f"o-{i:08d}"}},
        }
        for i in range(total)
    ]


def config(kind: ConnectorKind, uri: str, **values: Any) -> ConnectorConfig:
    provider = MongoSourceProvider() if kind is ConnectorKind.SOURCE else MongoSinkProvider()
    typed, props = provider.options().validate({"connectionString": uri, **values})
    return ConnectorConfig("mongodb", kind, typed, props)


# -- sink ------------------------------------------------------------------------------------------------


async def sink_round(uri: str, batches: list[list[dict[str, Any]]], collection: str) -> float:
    sink = MongoSinkProvider().create(
        SinkContext("bench", "sink"),
        config(ConnectorKind.SINK, uri, database=DB, collection=collection, mode="upsert"),
    )
    await sink.open()
    started = time.perf_counter()
    for number, docs in enumerate(batches):
        await sink.write(Batch(docs, key=str(number)))
    elapsed = time.perf_counter() - started
    await sink.close()
    return elapsed


async def bulk_write_round(client: Client, batches: list[list[dict[str, Any]]], collection: str) -> float:
    """The baseline: the same upserts, built and sent with PyMongo directly."""
    target = client[DB][collection]
    started = time.perf_counter()
    for docs in batches:
        operations = [
            UpdateOne(
                {"_id": doc["_id"]},
                {
                    "$set": {k: v for k, v in doc.items() if k not in ("_id", "_meta")},
                    "$setOnInsert": {"_id": doc["_id"]},
                },
                upsert=True,
            )
            for doc in docs
        ]
        await target.bulk_write(operations, ordered=False)
    return time.perf_counter() - started


# -- source ----------------------------------------------------------------------------------------------


async def record_events(client: Client, name: str, total: int) -> Any:
    """Write ``total`` inserts into a watched collection; the token from before the first one."""
    events = client[DB][name]
    await events.drop()
    async with await events.watch() as stream:  # nx-27017 records events once a collection is watched
        token = stream.resume_token
        docs = documents(total)
        for doc in docs:
            doc.pop("_meta")
        for start in range(0, total, 1000):
            await events.insert_many(docs[start : start + 1000])
    return token


async def source_round(uri: str, name: str, token: Any, total: int, batch: int) -> float:
    positions = {f"{DB}.{name}": {"phase": "stream", "resumeToken": dict(token)}}
    source = MongoSourceProvider().create(
        SourceContext("bench", positions=positions),
        config(ConnectorKind.SOURCE, uri, database=DB, collection=name, maxBatchSize=batch),
    )
    started = time.perf_counter()
    await source.start()
    seen = 0
    while seen < total:
        result = await source.next_batch(batch, 5.0)
        assert result is not None
        seen += len(result.documents)
    elapsed = time.perf_counter() - started
    await source.close()
    return elapsed


async def watch_round(uri: str, name: str, token: Any, total: int, batch: int) -> float:
    """The baseline: a client, ``watch(resume_after=token)``, ``try_next`` until ``total`` events arrived.

    Like the source round, it starts from connecting (the source creates its own client in ``start``).
    """
    started = time.perf_counter()
    client: Client = AsyncMongoClient(uri)
    seen = 0
    async with await client[DB][name].watch(
        resume_after=token, full_document="updateLookup", batch_size=batch, max_await_time_ms=5000
    ) as stream:
        while seen < total:
            change = await stream.try_next()
            if change is not None:
                seen += 1
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


# -- main ------------------------------------------------------------------------------------------------


def result_line(workload: str, count: int, ours: list[float], baseline_name: str, base: list[float]) -> str:
    rate = count / statistics.median(ours)
    baseline_rate = count / statistics.median(base)
    return json.dumps(
        {
            "workload": workload,
            "rate": round(rate, 1),
            "baseline": baseline_name,
            "baseline_rate": round(baseline_rate, 1),
            "ratio": round(rate / baseline_rate, 3),
            "goal": 0.9,
        }
    )


async def interleaved(
    number: int, ours: Callable[[], Awaitable[float]], baseline: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    """Both measurements of one round; even rounds run ours first, odd rounds the baseline first."""
    if number % 2:
        gc.collect()
        base = await baseline()
        gc.collect()
        return await ours(), base
    gc.collect()
    mine = await ours()
    gc.collect()
    return mine, await baseline()


async def bench_sink(args: argparse.Namespace, uri: str, client: Client) -> str:
    docs = documents(args.docs)
    batches = [docs[i : i + args.batch] for i in range(0, len(docs), args.batch)]
    ours: list[float] = []
    base: list[float] = []
    for number in range(args.rounds):
        mine, plain = f"sink{number}", f"base{number}"
        for name in (mine, plain):
            await client[DB][name].drop()
        a, b = await interleaved(
            number,
            partial(sink_round, uri, batches, mine),
            partial(bulk_write_round, client, batches, plain),
        )
        ours.append(a)
        base.append(b)
        print(f"sink round {number}: ours {args.docs / a:,.0f}/s, baseline {args.docs / b:,.0f}/s")
        for name in (mine, plain):
            await client[DB][name].drop()
    return result_line("mongo-sink", args.docs, ours, "bulk_write-loop", base)


async def bench_source(args: argparse.Namespace, uri: str, client: Client) -> str:
    ours: list[float] = []
    base: list[float] = []
    for number in range(args.rounds):
        mine, plain = f"ours{number}", f"watch{number}"
        # Record (and below, read) in alternating order: on nx-27017 whichever history is read
        # first is served measurably slower, so each side gets that position equally often.
        if number % 2:
            plain_token = await record_events(client, plain, args.events)
            mine_token = await record_events(client, mine, args.events)
        else:
            mine_token = await record_events(client, mine, args.events)
            plain_token = await record_events(client, plain, args.events)
        a, b = await interleaved(
            number,
            partial(source_round, uri, mine, mine_token, args.events, args.batch),
            partial(watch_round, uri, plain, plain_token, args.events, args.batch),
        )
        ours.append(a)
        base.append(b)
        print(f"source round {number}: ours {args.events / a:,.0f}/s, baseline {args.events / b:,.0f}/s")
        for name in (mine, plain):
            await client[DB][name].drop()
    return result_line("mongo-source", args.events, ours, "watch-loop", base)


async def run(args: argparse.Namespace) -> list[str]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-mongo-") as tmp,
        running_mongo(Path(tmp) / "data", in_memory=args.memory) as server,
    ):
        client: Client = AsyncMongoClient(server.uri)
        try:
            return [await bench_sink(args, server.uri, client), await bench_source(args, server.uri, client)]
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory", action="store_true", help="run nx-27017 with in-memory databases")
    args = parser.parse_args()
    for line in asyncio.run(run(args)):
        print(line)


if __name__ == "__main__":
    main()
