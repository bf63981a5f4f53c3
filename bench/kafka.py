"""Benchmark: a Kafka → stages → Kafka pipeline vs a raw aiokafka loop doing the same work, same broker.

Workload (issue 6): JSON orders in a 4-partition topic → ``$match {status:
PAID}`` → ``$set totalWithTax`` → ``$project`` → an output topic,
at-least-once, each run with a fresh consumer group and a fresh output topic.

- ``fluxion``: ``KafkaSource`` (drain mode) → the stage engine
  (``compile_pipeline``) → ``KafkaSink``, driven by the streaming executor
  with its defaults (micro-batch 500, pipelined, checkpoint every 5 s plus
  the final one, which commits the group offsets).
- ``raw-aiokafka``: ``getmany(max_records=500)`` → ``orjson.loads`` → the
  same filter/transform/projection in plain Python → ``send`` each result →
  wait for every acknowledgement → ``commit()`` — per batch.

Both read the same input and both include joining the group. Rounds
interleave A B A B and medians are compared. If ``quixstreams`` is installed
and runs against the broker, it is measured too (``kafka-vs-quixstreams``).
The last lines are one JSON object per workload (DESIGN.md).

    .venv/bin/python bench/kafka.py [--docs 500000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "connectors"))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from fluxion_connect_kafka import KafkaSinkProvider, KafkaSourceProvider  # noqa: E402

from fluxion_flows.checkpoint import MemoryCheckpointStore  # noqa: E402
from fluxion_flows.executor import CheckpointOptions, RuntimeOptions, StreamingPipelineExecutor  # noqa: E402
from fluxion_flows.registry import ProviderRegistry  # noqa: E402
from fluxion_flows.spi import ConnectorKind, RunMode, SinkContext, SourceContext  # noqa: E402
from fluxion_flows.stages import compile_pipeline  # noqa: E402
from tests.support.kafka_broker import TansuBroker, running_broker  # noqa: E402

GROUP_SETTINGS = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200}
STAGES: list[dict[str, Any]] = [
    {"$match": {"status": "PAID"}},
    {"$set": {"totalWithTax": {"$round": [{"$multiply": ["$total", 1.08]}, 2]}}},
    {"$project": {"_id": 0, "orderId": 1, "customerId": 1, "totalWithTax": 1}},
]
STATUSES = ("PAID", "PENDING", "PAID", "CANCELLED")
SINK_EXTRA: dict[str, Any] = {}
REGISTRY = ProviderRegistry(extra=[KafkaSourceProvider(), KafkaSinkProvider()])


def order(i: int) -> bytes:
    return orjson.dumps(
        {
            "orderId": f"ORD-{i:08d}",
            "customerId": f"c{i % 997}",
            "status": STATUSES[i % 4],
            "total": 10 + (i % 900) * 1.1,
        }
    )


async def fill(bootstrap: str, topic: str, total: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        pending = []
        for i in range(total):
            pending.append(await producer.send(topic, order(i), key=str(i).encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def run_fluxion(bootstrap: str, source_topic: str, output: str, group: str, total: int) -> float:
    source_config = REGISTRY.configure(
        ConnectorKind.SOURCE,
        "kafka",
        {"topic": source_topic, "bootstrapServers": bootstrap, "groupId": group, **GROUP_SETTINGS},
    )
    sink_config = REGISTRY.configure(
        ConnectorKind.SINK, "kafka", {"topic": output, "bootstrapServers": bootstrap, **SINK_EXTRA}
    )
    source = REGISTRY.create_source(SourceContext(pipeline_id=group, mode=RunMode.DRAIN), source_config)
    sink = REGISTRY.create_sink(SinkContext(pipeline_id=group), sink_config)
    executor = StreamingPipelineExecutor(
        group,
        source,
        sink,
        compile_pipeline(STAGES),
        runtime=RuntimeOptions(),
        checkpoint=CheckpointOptions(interval=5.0),
        store=MemoryCheckpointStore(),
    )
    started = time.perf_counter()
    result = await executor.run()
    elapsed = time.perf_counter() - started
    consumed = result.metrics["documentsIn"]
    if consumed != total:
        raise RuntimeError(f"fluxion consumed {consumed} of {total}")
    return total / elapsed


def transform(document: dict[str, Any]) -> dict[str, Any] | None:
    if document.get("status") != "PAID":
        return None
    return {
        "orderId": document.get("orderId"),
        "customerId": document.get("customerId"),
        "totalWithTax": round(document["total"] * 1.08, 2),
    }


async def run_raw(bootstrap: str, source_topic: str, output: str, group: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        source_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=200,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    started = time.perf_counter()
    await consumer.start()
    await producer.start()
    consumed = 0
    try:
        while consumed < total:
            fetched = await consumer.getmany(timeout_ms=500, max_records=500)
            futures = []
            for records in fetched.values():
                for record in records:
                    consumed += 1
                    result = transform(orjson.loads(record.value))
                    if result is not None:
                        futures.append(await producer.send(output, orjson.dumps(result)))
            if futures:
                await asyncio.gather(*futures)
            if fetched:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
    return total / (time.perf_counter() - started)


async def run_quixstreams(bootstrap: str, source_topic: str, output: str, group: str, total: int) -> float:
    """Quix Streams on the same workload (only when installed); its blocking loop runs in a thread."""
    from quixstreams import Application

    def blocking() -> float:
        app = Application(
            broker_address=bootstrap,
            consumer_group=group,
            auto_offset_reset="earliest",
            auto_create_topics=False,
        )
        src = app.topic(source_topic, value_deserializer="json")
        dst = app.topic(output, value_serializer="json")
        frame = app.dataframe(src)
        frame = frame.filter(lambda v: v.get("status") == "PAID")
        frame = frame.apply(lambda v: transform(v))
        counted = {"n": 0}

        def count(value: Any) -> None:
            counted["n"] += 1

        frame.update(count)
        frame.to_topic(dst)
        started = time.perf_counter()
        app.run(count=total // 2, timeout=60)
        return (total / (time.perf_counter() - started)) if counted["n"] else 0.0

    return await asyncio.to_thread(blocking)


async def measure(broker: TansuBroker, args: argparse.Namespace) -> list[dict[str, Any]]:
    source_topic = broker.create_topic("bench-orders", 4)
    await fill(broker.bootstrap, source_topic, args.docs)
    rates: dict[str, list[float]] = {"fluxion": [], "raw-aiokafka": []}
    runners = {"fluxion": run_fluxion, "raw-aiokafka": run_raw}
    for round_number in range(args.rounds):
        for name, runner in runners.items():
            output = broker.create_topic(f"bench-out-{name}-{round_number}", 4)
            gc.collect()
            rate = await runner(
                broker.bootstrap, source_topic, output, f"bench-{name}-{round_number}", args.docs
            )
            rates[name].append(rate)
            print(f"round {round_number + 1}: {name:13s} {rate:>10,.0f} docs/s", flush=True)
    fluxion = statistics.median(rates["fluxion"])
    raw = statistics.median(rates["raw-aiokafka"])
    lines = [
        {
            "workload": "kafka",
            "rate": round(fluxion),
            "baseline": "raw-aiokafka",
            "baseline_rate": round(raw),
            "ratio": round(fluxion / raw, 3),
            "goal": 0.9,
        }
    ]
    if importlib.util.find_spec("quixstreams") is None:
        print("quixstreams is not installed: kafka-vs-quixstreams skipped", flush=True)
    else:
        try:
            quix = []
            for round_number in range(args.rounds):
                output = broker.create_topic(f"bench-out-quix-{round_number}", 4)
                quix.append(
                    await run_quixstreams(
                        broker.bootstrap, source_topic, output, f"bench-quix-{round_number}", args.docs
                    )
                )
            quix_rate = statistics.median(quix)
            lines.append(
                {
                    "workload": "kafka-vs-quixstreams",
                    "rate": round(fluxion),
                    "baseline": "quixstreams",
                    "baseline_rate": round(quix_rate),
                    "ratio": round(fluxion / quix_rate, 3),
                    "goal": 1.0,
                }
            )
        except Exception as exc:
            print(f"quixstreams did not run against the broker: {exc}", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--docs", type=int, default=500_000, help="orders in the input topic (default 500000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per contender (default 3)")
    args = parser.parse_args()
    with running_broker() as broker:
        lines = asyncio.run(measure(broker, args))
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
