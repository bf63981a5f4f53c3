"""Scale-out: members of one consumer group split partitions and take over from each other without loss."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fluxion_connect_kafka import KafkaSource

from tests.kafka.util import committed, produce, source
from tests.support.polling import collect, documents, has, merged_positions, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Reader:
    """Pulls from a source in a background task and remembers every (partition, offset) it was handed."""

    def __init__(self, src: KafkaSource) -> None:
        self.src = src
        self.seen: set[tuple[int, int]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.src.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while (batch := await self.src.next_batch(200, 0.25)) is not None:
            self.seen.update((d["_meta"]["partition"], d["_meta"]["offset"]) for d in batch.documents)
            if batch.positions:
                await self.src.on_durable(batch.positions)

    async def close(self) -> None:
        await self.src.cancel()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.src.close()


async def test_two_members_split_partitions_and_one_takes_over(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=4)
    group = f"g-{topic}"
    first = Reader(source(bootstrap, topic, groupId=group, pipeline_id="a"))
    second = Reader(source(bootstrap, topic, groupId=group, pipeline_id="b"))
    await first.start()
    await wait_for(lambda: len(first.src.assignment) == 4, what="the first member to own every partition")
    await second.start()
    try:
        await wait_for(
            lambda: len(first.src.assignment) == 2 and len(second.src.assignment) == 2,
            what="the partitions to be split 2/2",
        )
        assert not first.src.assignment & second.src.assignment
        await produce(bootstrap, topic, [{"n": i} for i in range(400)], key=lambda i: str(i).encode())
        await wait_for(lambda: len(first.seen | second.seen) == 400, what="all 400 records")
        assert {p for p, _ in first.seen}.isdisjoint({p for p, _ in second.seen})
        await second.close()
        await wait_for(lambda: len(first.src.assignment) == 4, what="the survivor to take over")
        await produce(bootstrap, topic, [{"n": i} for i in range(400, 800)], key=lambda i: str(i).encode())
        await wait_for(lambda: len(first.seen | second.seen) == 800, what="all 800 records")
    finally:
        await first.close()
        await second.close()
    ends = await committed(bootstrap, group, topic, 4)
    assert sum(v or 0 for v in ends.values()) == 800


async def test_killed_member_partitions_are_taken_over_without_loss(
    bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=4)
    group = f"g-{topic}"
    log_path = tmp_path / "member.jsonl"
    survivor = Reader(source(bootstrap, topic, groupId=group, pipeline_id="survivor"))
    with log_path.open("wb") as log:
        member = subprocess.Popen(  # noqa: ASYNC220 (starting a process does not block)
            [sys.executable, "-m", "tests.kafka.member", bootstrap, topic, group],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:

        def member_events() -> list[dict[str, Any]]:
            return [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.strip()]

        await wait_for(
            lambda: any("assigned" in e and e["assigned"] for e in member_events()), what="member join"
        )
        await survivor.start()
        await wait_for(lambda: len(survivor.src.assignment) == 2, within=30, what="a 2/2 split")
        await produce(bootstrap, topic, [{"n": i} for i in range(2000)], key=lambda i: str(i).encode())
        await wait_for(
            lambda: any("batch" in e for e in member_events()) and len(survivor.seen) > 0,
            what="both members reading",
        )
        member.send_signal(signal.SIGKILL)
        member.wait(timeout=10)
        await wait_for(lambda: len(survivor.src.assignment) == 4, within=30, what="takeover after kill -9")
        await produce(bootstrap, topic, [{"n": i} for i in range(2000, 2500)], key=lambda i: str(i).encode())
        handed_to_member = {(int(p), int(o)) for e in member_events() if "batch" in e for p, o in e["batch"]}
        await wait_for(
            lambda: len(survivor.seen | handed_to_member) == 2500, what="every record, after the takeover"
        )
    finally:
        if member.poll() is None:
            member.kill()
        await survivor.close()
    assert len(survivor.seen | handed_to_member) == 2500


async def test_offsets_durable_after_losing_the_partition_are_redelivered_not_lost(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    group = f"g-{topic}"
    await produce(bootstrap, topic, [{"n": i} for i in range(10)])
    impatient: dict[str, Any] = {"max.poll.interval.ms": 1000}
    slow = source(bootstrap, topic, groupId=group, **impatient)
    await slow.start()
    try:
        first = await collect(slow, has(10))
        # the member stops polling past max.poll.interval.ms: the group takes the partition away
        await wait_for(lambda: not slow.assignment, within=30, what="the partition to be revoked")
        await slow.on_durable(merged_positions(first))  # the checkpoint lands after the revoke: not committed
    finally:
        await slow.close()
    assert await committed(bootstrap, group, topic, 1) == {0: None}
    heir = source(bootstrap, topic, groupId=group)
    await heir.start()
    try:
        again = await collect(heir, has(10))
    finally:
        await heir.close()
    assert [d["n"] for d in documents(again)] == list(range(10))  # redelivered to the next owner
