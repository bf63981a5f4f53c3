"""End to end through ``fluxion run`` subprocesses: the connector acceptance list of issue 8.

Input events are ``{"id": n, "key": ...}``; the pipeline adds ``processed``
with ``$set`` and writes to a second hub, keyed by ``key``. Every check
compares the set of ids written with the set sent: at-least-once allows
repeats, never a gap.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from fluxion_connect_eventhub.ownership import open_store

from tests.eventhub.pipeline import (
    Producer,
    checkpoint_of,
    finish,
    fluxion,
    output_count,
    output_ids,
    running,
    write_manifest,
)
from tests.eventhub.util import send
from tests.support.eventhub_emulator import EventHubEmulator
from tests.support.polling import wait_for

MakeHub = Callable[[int], str]
pytestmark = pytest.mark.slow


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_drain_transfers_between_hubs_and_resumes(
    emulator: EventHubEmulator, make_hub: MakeHub, tmp_path: Path, run_env: dict[str, str]
) -> None:
    source_hub, sink_hub = make_hub(4), make_hub(2)
    manifest_id = _id("eh-drain")
    manifest = write_manifest(tmp_path / "m.yaml", emulator, source_hub, sink_hub, manifest_id=manifest_id)
    producer = Producer(emulator, source_hub)
    try:
        await producer.send(200)
        await send(emulator, source_hub, ["not json {"], partition_id="2")
        log = tmp_path / "run1.log"
        first = fluxion(manifest, "--mode", "drain", env=run_env, log=log)
        with running(first):
            finish(first, log)
        bodies = [orjson.loads(e.body) for p in range(2) for e in emulator.events(sink_hub, p)]
        assert sorted(b["id"] for b in bodies if "id" in b) == list(range(200))
        text = [b for b in bodies if "body" in b]
        assert [(t["body"], t["processed"], t["_meta"]["partitionId"]) for t in text] == [
            ("not json {", True, "2")
        ]
        assert all(b["_meta"]["eventHub"] == source_hub for b in bodies)
        positions = checkpoint_of(manifest, manifest_id)["positions"]
        for pid in range(4):
            assert positions[str(pid)]["sequenceNumber"] == len(emulator.events(source_hub, pid)) - 1

        await producer.send(30)
        log = tmp_path / "run2.log"
        second = fluxion(manifest, "--mode", "drain", env=run_env, log=log)
        with running(second):
            finish(second, log)
        ids = [
            b["id"]
            for p in range(2)
            for e in emulator.events(sink_hub, p)
            if "id" in (b := orjson.loads(e.body))
        ]
        assert sorted(ids) == list(range(230))  # resumed after the checkpoint: nothing twice, nothing lost
    finally:
        await producer.close()


async def test_sigkill_and_restart_lose_nothing(
    emulator: EventHubEmulator, make_hub: MakeHub, tmp_path: Path, run_env: dict[str, str]
) -> None:
    source_hub, sink_hub = make_hub(4), make_hub(4)
    manifest = write_manifest(
        tmp_path / "m.yaml",
        emulator,
        source_hub,
        sink_hub,
        manifest_id=_id("eh-kill"),
        runtime={"microBatchSize": 50},
    )
    producer = Producer(emulator, source_hub).start()
    try:
        log = tmp_path / "run1.log"
        first = fluxion(manifest, env=run_env, log=log)
        with running(first):
            await wait_for(lambda: output_count(emulator, sink_hub, 4) >= 300, within=60, what="300 outputs")
            first.send_signal(signal.SIGKILL)
            first.wait()
        await producer.stop()
        await producer.send(100)  # the restart always has work the killed run never saw
        sent = producer.sent
        assert output_count(emulator, sink_hub, 4) < sent
        log = tmp_path / "run2.log"
        second = fluxion(manifest, "--mode", "drain", env=run_env, log=log)
        with running(second):
            finish(second, log)
        assert set(output_ids(emulator, sink_hub, 4)) == set(range(sent))
    finally:
        await producer.close()


@pytest.mark.parametrize(
    "store",
    [
        pytest.param("file", id="file"),
        pytest.param(
            "postgresql://postgres@127.0.0.1:5432/postgres", id="postgres", marks=pytest.mark.postgres
        ),
    ],
)
async def test_two_runs_share_partitions_and_one_takes_over(
    emulator: EventHubEmulator, make_hub: MakeHub, tmp_path: Path, run_env: dict[str, str], store: str
) -> None:
    source_hub, sink_hub = make_hub(4), make_hub(4)
    store_url = f"file:{tmp_path / 'ownership'}" if store == "file" else store
    manifest_id = _id("eh-share")
    manifest = write_manifest(
        tmp_path / "m.yaml",
        emulator,
        source_hub,
        sink_hub,
        manifest_id=manifest_id,
        source={
            "ownershipStore": store_url,
            "loadBalancingInterval": "0.5s",
            "partitionOwnershipExpirationInterval": "3s",
        },
        runtime={"microBatchSize": 50},
    )
    ownership = open_store(store_url, scope=f"{manifest_id}.flow")
    namespace = f"127.0.0.1:{emulator.port}"

    async def owners() -> dict[str, str]:
        records = await ownership.list_ownership(namespace, source_hub, "$Default")
        return {r["partition_id"]: r["owner_id"] for r in records if r["owner_id"]}

    async def split_two_ways() -> bool:
        current = await owners()
        return len(current) == 4 and sorted(
            list(current.values()).count(o) for o in set(current.values())
        ) == [2, 2]

    producer = Producer(emulator, source_hub)
    first = fluxion(manifest, env=run_env, log=tmp_path / "a.log")
    second = fluxion(manifest, env=run_env, log=tmp_path / "b.log")
    try:
        with running(first, second):
            await wait_for(split_two_ways, within=60, what="two runs owning two partitions each")
            producer.start()
            await wait_for(lambda: output_count(emulator, sink_hub, 4) >= 200, within=60, what="200 outputs")
            first.send_signal(signal.SIGKILL)
            first.wait()
            survivor = set((await owners()).values())
            await wait_for(
                lambda: _all_owned_by_one(owners), within=30, what="the survivor to own all four partitions"
            )
            sent = await producer.stop()
            await wait_for(
                lambda: set(output_ids(emulator, sink_hub, 4)) >= set(range(sent)),
                within=60,
                what=f"all {sent} events in the output",
            )
            assert len(survivor) == 2  # both runs were active until the kill
            second.send_signal(signal.SIGKILL)
            second.wait()
        assert set(output_ids(emulator, sink_hub, 4)) == set(range(sent))
    finally:
        await producer.close()
        await ownership.close()


async def _all_owned_by_one(owners: Callable[[], object]) -> bool:
    current = await owners()  # type: ignore[misc]
    return len(current) == 4 and len(set(current.values())) == 1
