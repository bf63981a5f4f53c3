"""End to end through ``fluxion run`` in a subprocess: the acceptance list of the Kafka issue.

Each run is a real process (so SIGKILL is a real crash) reading from and
writing to the Tansu broker; output records carry the input's ``_meta``, so
every output names the input record it came from.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.kafka.util import FAST_GROUP, produce, read_topic
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]


def manifest(
    path: Path,
    bootstrap: str,
    source: dict[str, Any],
    sink: dict[str, Any],
    *,
    stages: list[dict[str, Any]] | None = None,
    error_policy: dict[str, Any] | None = None,
    interval: str = "PT0.2S",
) -> Path:
    execution: dict[str, Any] = {
        "type": "streaming",
        "source": {"type": "kafka", "bootstrapServers": bootstrap, **FAST_GROUP, **source},
        "sink": sink if sink.get("type") != "kafka" else {"bootstrapServers": bootstrap, **sink},
        "checkpoint": {"store": "file", "directory": str(path.parent / "checkpoints"), "interval": interval},
    }
    if stages is not None:
        execution["process"] = {"type": "pipeline", "stages": stages}
    if error_policy is not None:
        execution["errorPolicy"] = error_policy
    document = {
        "schemaVersion": "1.0.0",
        "id": "kafka-e2e",
        "version": "1.0.0",
        "operations": {"flow": {"$ref": "#/operationDefs/flow"}},
        "operationDefs": {"flow": {"operationId": "flow", "kind": "trigger", "execution": execution}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def fluxion(*args: str, log: Path | None = None, verbose: bool = False) -> subprocess.Popen[bytes]:
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    quiet = [] if verbose else ["--quiet"]
    return subprocess.Popen(
        [sys.executable, "-m", "fluxion_flows", "run", *quiet, *args],
        cwd=ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "COLUMNS": "100000"},
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 120) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def checkpoint_positions(directory: Path) -> dict[str, int]:
    files = list(directory.glob("*.checkpoint.json"))
    if not files:
        return {}
    return {k: int(v) for k, v in orjson.loads(files[0].read_bytes())["positions"].items()}


def origins(records: list[Any]) -> list[tuple[int, int]]:
    return [
        (orjson.loads(r.value)["_meta"]["partition"], orjson.loads(r.value)["_meta"]["offset"])
        for r in records
    ]


async def test_fluxion_sample_orders_set_processed_to_output_topic(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source_topic, output = new_topic(partitions=2), new_topic(partitions=1)
    await produce(bootstrap, source_topic, [{"orderId": "A-1", "total": 10}, {"orderId": "A-2", "total": 20}])
    path = manifest(
        tmp_path / "sample.yaml",
        bootstrap,
        {"topic": source_topic},
        {"type": "kafka", "topic": output, "acks": "all", "keyField": "orderId"},
        stages=[{"$set": {"processed": True}}],
    )
    log = tmp_path / "run.log"
    assert finish(fluxion(str(path), "--mode", "drain", log=log)) == 0, log.read_text()
    records = await read_topic(bootstrap, output)
    values = sorted((orjson.loads(r.value) for r in records), key=lambda v: v["orderId"])
    assert [(v["orderId"], v["processed"]) for v in values] == [("A-1", True), ("A-2", True)]
    assert values[0]["_meta"]["topic"] == source_topic and values[0]["_meta"]["offset"] in (0, 1)
    assert sorted(r.key for r in records) == [b"A-1", b"A-2"]
    assert sum(checkpoint_positions(tmp_path / "checkpoints").values()) == 2


async def test_invalid_json_goes_to_the_dead_letter_sink_with_partition_and_offset(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source_topic, output = new_topic(partitions=1), new_topic(partitions=1)
    await produce(bootstrap, source_topic, [b'{"n": 0}', b'{"n": 1', b'{"n": 2}'])
    dead = tmp_path / "dead.jsonl"
    path = manifest(
        tmp_path / "dlq.yaml",
        bootstrap,
        {"topic": source_topic},
        {"type": "kafka", "topic": output},
        error_policy={"policy": "deadLetter", "sink": {"type": "file", "path": str(dead)}},
    )
    log = tmp_path / "run.log"
    assert finish(fluxion(str(path), "--mode", "drain", log=log)) == 0, log.read_text()
    assert sorted(orjson.loads(r.value)["n"] for r in await read_topic(bootstrap, output)) == [0, 2]
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines() if line.strip()]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["positions"]["partition"] == 0 and letter["positions"]["offset"] == 1
    assert letter["positions"]["topic"] == source_topic
    assert "invalid JSON" in letter["error"]["message"] and letter["documents"] == [{"raw": '{"n": 1'}]


@pytest.mark.slow
async def test_100k_records_survive_random_sigkills(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    total = 100_000
    source_topic, output = new_topic(partitions=4), new_topic(partitions=4)
    await produce(bootstrap, source_topic, [{"id": i} for i in range(total)], key=lambda i: str(i).encode())
    path = manifest(
        tmp_path / "crash.yaml",
        bootstrap,
        {"topic": source_topic},
        {"type": "kafka", "topic": output, "acks": "all"},
        stages=[{"$set": {"processed": True}}],
    )
    chaos = random.Random()
    kills: list[dict[str, int]] = []
    log = tmp_path / "runs.log"
    for _ in range(12):
        run = fluxion(str(path), "--mode", "drain", log=log)
        if len(kills) < 4:
            target = await output_count(bootstrap, output) + chaos.randint(5_000, 20_000)
            try:
                await wait_for(
                    partial(progressed, run, bootstrap, output, target), within=90, what="progress"
                )
            except BaseException:
                run.kill()
                raise
            if run.poll() is None:  # kill -9 at a random point of progress, then restart
                run.send_signal(signal.SIGKILL)
                run.wait(timeout=10)
                kills.append(checkpoint_positions(tmp_path / "checkpoints"))
                continue
        if finish(run) == 0:
            break
    else:
        pytest.fail(f"the pipeline never finished:\n{log.read_text()[-3000:]}")
    assert kills, "no run was killed: the pipeline finished before the first kill"
    counts = Counter(origins(await read_topic(bootstrap, output, within=60)))
    expected = {(p, o) for p, o in counts}  # every origin seen ...
    per_partition = Counter(p for p, _ in expected)
    assert sum(per_partition.values()) == total  # ... and they cover every input record exactly
    for partition, count in per_partition.items():
        assert {o for p, o in expected if p == partition} == set(range(count))
    for (partition, offset), seen in counts.items():
        if seen > 1:  # a duplicate must lie after the last checkpoint taken before some kill
            assert any(offset >= k.get(f"{source_topic}:{partition}", 0) for k in kills), (partition, offset)
            assert seen <= 1 + len(kills)


async def progressed(process: subprocess.Popen[bytes], bootstrap: str, topic: str, target: int) -> bool:
    """The run ended by itself, or the output reached ``target`` records."""
    return process.poll() is not None or bool(await output_count(bootstrap, topic, at_least=target))


async def output_count(bootstrap: str, topic: str, at_least: int | None = None) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    count = sum(ends.values())  # under-reported by this broker: fine as a progress gauge
    return count if at_least is None else count >= at_least


@pytest.mark.slow
async def test_two_pipeline_processes_split_the_group_and_survive_a_kill(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    source_topic, output = new_topic(partitions=4), new_topic(partitions=4)
    path = manifest(
        tmp_path / "group.yaml",
        bootstrap,
        {"topic": source_topic},
        {"type": "kafka", "topic": output},
        stages=[{"$set": {"processed": True}}],
    )
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first, second = (fluxion(str(path), verbose=True, log=log) for log in logs)
    produced = 0
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            # keep writing until both processes have checkpointed records of their own: the group is split
            while not all(delivered_partitions(log) for log in logs):
                await producer.send_and_wait(
                    source_topic, orjson.dumps({"id": produced}), key=str(produced).encode()
                )
                produced += 1
                if produced > 200_000:
                    pytest.fail("the second process never got partitions")
        finally:
            await producer.stop()
        owned = [delivered_partitions(log) for log in logs]
        assert owned[0] and owned[1]
        await wait_for(
            lambda: all_seen(bootstrap, output, produced), within=60, what="the records before the kill"
        )
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=10)
        more = range(produced, produced + 3000)
        await produce(
            bootstrap, source_topic, [{"id": i} for i in more], key=lambda i: str(i + produced).encode()
        )
        produced += len(more)
        await wait_for(
            lambda: all_seen(bootstrap, output, produced), within=60, what="every record after the kill"
        )
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (first, second):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    assert first.returncode == 0, logs[0].read_text()[-2000:]
    assert len(delivered_partitions(logs[0])) == 4  # the survivor took every partition over
    assert {orjson.loads(r.value)["id"] for r in await read_topic(bootstrap, output)} == set(range(produced))


def delivered_partitions(log: Path) -> set[str]:
    """Partitions named in the positions of the checkpoints one process reported."""
    found: set[str] = set()
    if log.exists():
        text = log.read_text().replace("\n", "")
        for match in re.finditer(r"checkpoint generation=\d+\s*positions=(\{[^}]*\})", text):
            found.update(orjson.loads(match[1]))
    return found


async def all_seen(bootstrap: str, topic: str, count: int) -> bool:
    if not await output_count(bootstrap, topic, at_least=count - 4 * 500):
        return False
    records = await read_topic(bootstrap, topic)
    return len({orjson.loads(r.value)["id"] for r in records}) >= count
