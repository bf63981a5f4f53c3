"""Benchmark of the stage engine against a hand-written function and mongomock.

Workloads (issue 3):
* ``stages-reference``: $match {status: "PAID"} -> $set {totalWithTax, tier} -> $project.
* ``stages-heavy``: $unwind items -> $set with string and date operators -> $group by
  customer with $sum/$avg/$push (state kept across micro-batches, like the executor runs it).

Each engine is timed on 1M documents in micro-batches of 500, interleaving the
engine and the hand-written function (A B A B) so load drifts on a shared
machine hit both alike, and reporting medians.

mongomock is timed twice, because its rate depends on how many documents one
``aggregate`` sees (measured: about 54k docs/s over 500 documents, 17k over
20,000, 3.7k over 100,000 for the reference pipeline):

* ``<workload>-mongomock`` (the issue's goal): ``aggregate`` over one collection
  of the workload's documents. A million would take most of an hour, so it is
  measured on 100,000 (20,000 with ``--quick``); since the rate only falls as
  the collection grows, the ratio printed is a lower bound of the ratio on 1M.
* ``<workload>-mongomock-per-batch`` (no goal, for honesty): ``aggregate`` over
  collections of one micro-batch (500 documents), the unit our engine
  processes, i.e. mongomock's best per-document rate. At that size even the
  hand-written function is only about 60x (reference) and 20x (heavy) faster
  than mongomock, so this line shows per-document cost, not the goal.

The last lines are one JSON object per workload.
Run: ``.venv/bin/python bench/stages.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import mongomock

from fluxion_flows.stages import compile_pipeline

Doc = dict[str, Any]
BATCH = 500
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

REFERENCE = [
    {"$match": {"status": "PAID"}},
    {"$set": {"totalWithTax": {"$multiply": ["$total", 1.08]}, "tier": "$customer.tier"}},
    {"$project": {"_id": 0, "orderId": 1, "totalWithTax": 1, "tier": 1}},
]

HEAVY = [
    {"$unwind": "$items"},
    {
        "$set": {
            "sku": {"$toUpper": "$items.sku"},
            "label": {"$concat": ["$customer.name", "/", "$items.sku"]},
            "day": {"$dateToString": {"date": "$createdAt", "format": "%Y-%m-%d"}},
            "line": {"$multiply": ["$items.qty", "$items.price"]},
        }
    },
    {
        "$group": {
            "_id": "$customer.id",
            "revenue": {"$sum": "$line"},
            "avgLine": {"$avg": "$line"},
            "skus": {"$push": "$sku"},
        }
    },
]


def make_orders(n: int, seed: int = 7) -> list[Doc]:
    rng = random.Random(seed)
    statuses = ["PAID", "NEW", "SHIPPED", "PAID"]
    return [
        {
            "_id": i,
            "orderId": f"o-{i}",
            "status": statuses[rng.randrange(4)],
            "total": round(rng.uniform(1, 500), 2),
            "customer": {"id": i % 1000, "tier": rng.choice(["gold", "silver"]), "name": f"cust{i % 1000}"},
            "createdAt": START + dt.timedelta(seconds=i),
            "items": [
                {"sku": f"sku-{rng.randrange(50)}", "qty": rng.randrange(1, 5), "price": 9.5}
                for _ in range(2)
            ],
        }
        for i in range(n)
    ]


def hand_reference() -> Callable[[list[Doc]], list[Doc]]:
    def run(batch: list[Doc]) -> list[Doc]:
        out = []
        for d in batch:
            if d.get("status") == "PAID":
                out.append(
                    {
                        "orderId": d["orderId"],
                        "totalWithTax": d["total"] * 1.08,
                        "tier": d["customer"]["tier"],
                    }
                )
        return out

    return run


def hand_heavy() -> Callable[[list[Doc]], list[Doc]]:
    state: dict[Any, list[Any]] = {}

    def run(batch: list[Doc]) -> list[Doc]:
        touched: dict[Any, list[Any]] = {}
        for d in batch:
            customer = d["customer"]
            day = d["createdAt"].strftime("%Y-%m-%d")
            for item in d["items"]:
                sku = item["sku"].upper()
                _label = customer["name"] + "/" + item["sku"]
                line = item["qty"] * item["price"]
                _ = day, _label
                entry = state.get(customer["id"])
                if entry is None:
                    entry = state[customer["id"]] = [0, 0, []]
                entry[0] += line
                entry[1] += 1
                entry[2].append(sku)
                touched[customer["id"]] = entry
        return [
            {"_id": k, "revenue": e[0], "avgLine": e[0] / e[1], "skus": list(e[2])}
            for k, e in touched.items()
        ]

    return run


def engine(pipeline: list[Doc]) -> Callable[[], Callable[[list[Doc]], list[Doc]]]:
    def factory() -> Callable[[list[Doc]], list[Doc]]:
        stages = compile_pipeline(pipeline)

        def run(batch: list[Doc]) -> list[Doc]:
            for stage in stages:
                batch = stage(batch)
            return batch

        return run

    return factory


def rate(factory: Callable[[], Callable[[list[Doc]], list[Doc]]], pool: list[Doc], total: int) -> float:
    """Documents per second over ``total`` input documents (the pool reused), fresh state per run."""
    run = factory()
    batches = [pool[i : i + BATCH] for i in range(0, len(pool), BATCH)]
    gc.collect()
    done = 0
    started = time.perf_counter()
    while done < total:
        for batch in batches:
            run(batch)
            done += len(batch)
            if done >= total:
                break
    return done / (time.perf_counter() - started)


def mongomock_batch_rate(pipeline: list[Doc], sample: list[Doc], rounds: int) -> float:
    """Documents per second of ``aggregate`` over the sample, one micro-batch per collection."""
    database = mongomock.MongoClient().bench
    collections = []
    for number, start in enumerate(range(0, len(sample), BATCH)):
        collection = database[f"orders{number}"]
        collection.insert_many([dict(d) for d in sample[start : start + BATCH]])
        collections.append(collection)
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for collection in collections:
            list(collection.aggregate(pipeline))
        rates.append(len(sample) / (time.perf_counter() - started))
    return statistics.median(rates)


def mongomock_collection_rate(pipeline: list[Doc], documents: list[Doc]) -> float:
    """Documents per second of one ``aggregate`` over a collection holding all ``documents``."""
    collection = mongomock.MongoClient().bench.orders
    collection.insert_many([dict(d) for d in documents])
    gc.collect()
    started = time.perf_counter()
    list(collection.aggregate(pipeline))
    return len(documents) / (time.perf_counter() - started)


def result(workload: str, rate: float, baseline: str, baseline_rate: float, goal: float | None) -> Doc:
    ratio = rate / baseline_rate
    return {
        "workload": workload,
        "rate": round(rate),
        "baseline": baseline,
        "baseline_rate": round(baseline_rate),
        "ratio": round(ratio, 3 if ratio < 10 else 1),
        "goal": goal,
    }


def interleaved(runs: list[Callable[[], float]], rounds: int) -> list[float]:
    """Median rate of each callable, measured in turns (A B C A B C ...) so load drifts hit all alike."""
    rates: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for measure, collected in zip(runs, rates, strict=True):
            collected.append(measure())
    return [statistics.median(collected) for collected in rates]


def main() -> None:
    quick = "--quick" in sys.argv
    total = 100_000 if quick else 1_000_000
    pool = make_orders(50_000 if quick else 200_000)
    sample = pool[:300] if quick else pool[:2000]
    collection = pool[: 20_000 if quick else 100_000]
    results = []
    goals: tuple[float | None, float | None]
    for name, pipeline, hand, docs, goals in (
        ("stages-reference", REFERENCE, hand_reference, total, (0.5, 100)),
        # Heavier per document: fewer of them. The issue sets its goals for the reference
        # pipeline and asks for the heavy one "with the same three columns": no goal.
        ("stages-heavy", HEAVY, hand_heavy, total // 5, (None, None)),
    ):
        ours, baseline = interleaved(
            [lambda p=pipeline, n=docs: rate(engine(p), pool, n), lambda h=hand, n=docs: rate(h, pool, n)], 3
        )
        print(
            f"{name}: engine {ours:,.0f} docs/s, hand-written {baseline:,.0f} docs/s, "
            f"ratio {ours / baseline:.2f}"
        )
        whole = mongomock_collection_rate(pipeline, collection)
        per_batch = mongomock_batch_rate(pipeline, sample, 3)
        print(
            f"{name}: mongomock {whole:,.0f} docs/s over {len(collection):,} documents "
            f"(engine/mongomock {ours / whole:.0f}x), {per_batch:,.0f} docs/s over {BATCH} "
            f"(engine {ours / per_batch:.0f}x, hand-written {baseline / per_batch:.0f}x)"
        )
        results += [
            result(name, ours, "hand-written", baseline, goals[0]),
            result(f"{name}-mongomock", ours, f"mongomock ({len(collection)} docs)", whole, goals[1]),
            result(f"{name}-mongomock-per-batch", ours, f"mongomock ({BATCH} docs)", per_batch, None),
        ]
    for line in results:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
