"""Bad input: 1% poison records, each kind dead-lettered with its context, every good record delivered.

Kafka (4 partitions) → ``$set qtyInt: {$toInt: "$qty"}`` → HTTP, ``errorPolicy:
deadLetter`` to a file sink. Among 3,000 records, 30 seeded ones are poison,
10 of each kind:

- invalid JSON in the topic (the source reports a record failure),
- ``qty: "abc"``, which ``$toInt`` cannot convert (a stage error),
- documents the HTTP server rejects with 400 (a non-retryable sink error).

The dead-letter file must hold exactly the poison records, each with the
error context for its kind; the HTTP server must have accepted every other
record.

The property is checked with ``microBatchSize: 1`` and with realistic
batches of 100: the executor halves a batch that failed because of its
content (a stage error, a 4xx) until the poison records are isolated, so the
good records sharing a batch with them still reach the target.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.spi import RunMode
from tests.chaos.targets import FAST_GROUP
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer

TOTAL = 3000
SEED = 9


def poison_plan(total: int, seed: int) -> dict[str, set[int]]:
    ids = random.Random(seed).sample(range(total), total // 100)
    return {"json": set(ids[0::3]), "stage": set(ids[1::3]), "sink": set(ids[2::3])}


def record(n: int, plan: dict[str, set[int]]) -> bytes:
    if n in plan["json"]:
        return b'{"id": %d, "qty": "%d", ' % (n, n)  # truncated: not JSON
    qty = "abc" if n in plan["stage"] else str(n)
    return orjson.dumps({"id": n, "qty": qty, "reject": n in plan["sink"]})


def rejecting(plan: dict[str, set[int]]) -> Callable[[RecordedRequest], Reply | None]:
    def respond(request: RecordedRequest) -> Reply | None:
        bad = [d["id"] for d in request.json() if d["id"] in plan["sink"]]
        if bad:
            return Reply(400, body={"error": f"document {bad[0]} rejected: reject flag set"})
        return None

    return respond


async def run_poisoned(
    bootstrap: str, topic: str, server: ScriptedHttpServer, tmp: Path, batch: int
) -> tuple[dict[str, set[int]], list[dict[str, Any]], dict[str, Any]]:
    plan = poison_plan(TOTAL, SEED)
    values = [record(n, plan) for n in range(TOTAL)]
    await produce_raw(bootstrap, topic, values)
    server.responder = rejecting(plan)
    dead = tmp / "dead-letters.jsonl"
    document = {
        "id": "poison",
        "operationDefs": {
            "flow": {
                "execution": {
                    "type": "streaming",
                    "source": {"type": "kafka", "bootstrapServers": bootstrap, "topic": topic, **FAST_GROUP},
                    "process": {"type": "pipeline", "stages": [{"$set": {"qtyInt": {"$toInt": "$qty"}}}]},
                    "sink": {"type": "http", "endpoint": server.url + "/ingest", "retry": {"maxAttempts": 2}},
                    "runtime": {"microBatchSize": batch, "maxBatchWait": "PT0.05S"},
                    "errorPolicy": {"policy": "deadLetter", "sink": {"type": "file", "path": str(dead)}},
                    "checkpoint": {"store": "memory"},
                }
            }
        },
    }
    executor = await Pipeline.from_manifest(document).executor(
        mode=RunMode.DRAIN, store=MemoryCheckpointStore()
    )
    result = await executor.run()
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()] if dead.exists() else []
    return plan, letters, result.metrics


async def produce_raw(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(values):
            await producer.send(topic, value, key=str(n).encode())
        await producer.flush()
    finally:
        await producer.stop()


def letter_ids(letter: dict[str, Any]) -> list[int]:
    """The ids of the records a dead letter carries (raw text for records that were not JSON)."""
    ids = []
    for document in letter["documents"]:
        if "raw" in document and "id" not in document:
            ids.append(int(re.search(r'"id": (\d+)', document["raw"])[1]))  # type: ignore[index]
        else:
            ids.append(int(document["id"]))
    return ids


def assert_context(letter: dict[str, Any], kind: str, topic: str) -> None:
    error = letter["error"]
    assert error["type"] and error["message"], letter
    assert letter["attempts"] >= 1 and letter["time"] and letter["positions"], letter
    if kind == "json":
        assert letter["step"] == "source" and "invalid JSON" in error["message"], letter
        position = letter["positions"]
        assert position["topic"] == topic and position["partition"] in range(4), letter
        assert isinstance(position["offset"], int), letter
    elif kind == "stage":
        assert letter["step"] == "stage" and "$toInt" in error["message"] + letter["where"], letter
        assert all(d["_meta"]["topic"] == topic for d in letter["documents"]), letter
    else:
        assert letter["step"] == "sink" and error["status"] == 400, letter
        assert "rejected" in error["body_excerpt"], letter


async def test_every_poison_record_is_dead_lettered_and_every_good_record_delivered(
    bootstrap: str, new_topic: Callable[..., str], http_server: ScriptedHttpServer, tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    plan, letters, metrics = await run_poisoned(bootstrap, topic, http_server, tmp_path, batch=1)

    kinds = {n: kind for kind, ids in plan.items() for n in ids}
    lettered: dict[int, dict[str, Any]] = {}
    for letter in letters:
        for n in letter_ids(letter):
            assert n in kinds, f"good record {n} was dead-lettered: {letter['error']}"
            assert n not in lettered, f"record {n} dead-lettered twice"
            lettered[n] = letter
    assert set(lettered) == set(kinds), (
        f"poison records missing from the dead letters: {set(kinds) - set(lettered)}"
    )
    for n, letter in lettered.items():
        assert_context(letter, kinds[n], topic)
    good = set(range(TOTAL)) - set(kinds)
    accepted = [d["id"] for d in http_server.documents("/ingest")]
    assert set(accepted) == good and len(accepted) == len(good)
    assert all(d["qtyInt"] == d["id"] for d in http_server.documents("/ingest"))
    assert metrics["deadLettered"] == len(kinds)
    print(f"poison: {len(kinds)} of {TOTAL} dead-lettered with context, {len(good)} delivered")


@pytest.fixture
def bootstrap(kafka_broker: Any) -> str:
    return str(kafka_broker.bootstrap)


async def test_poison_isolation_with_realistic_batches(
    bootstrap: str, new_topic: Callable[..., str], http_server: ScriptedHttpServer, tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    plan, letters, _ = await run_poisoned(bootstrap, topic, http_server, tmp_path, batch=100)
    poison = set().union(*plan.values())
    lettered = {n for letter in letters for n in letter_ids(letter)}
    accepted = {d["id"] for d in http_server.documents("/ingest")}
    assert lettered == poison
    assert accepted == set(range(TOTAL)) - poison
