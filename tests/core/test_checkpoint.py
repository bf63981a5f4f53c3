"""Checkpoint stores: generation fence, merged positions, atomic files that survive kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from fluxion_flows.checkpoint import (
    Checkpoint,
    CheckpointStore,
    FileCheckpointStore,
    MemoryCheckpointStore,
    StaleGenerationError,
)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    return MemoryCheckpointStore() if request.param == "memory" else FileCheckpointStore(tmp_path)


async def test_claim_starts_empty_then_bumps_the_generation(store: CheckpointStore) -> None:
    first = await store.claim("p")
    assert first.generation == 1 and first.positions == {}
    await store.save(Checkpoint("p", first.generation, {"a": 5}, {"s": [1]}, time.time(), 5))
    second = await store.claim("p")
    assert second.generation == 2
    assert second.positions == {"a": 5} and second.stage_state == {"s": [1]} and second.documents == 5


async def test_an_older_generation_is_refused(store: CheckpointStore) -> None:
    old = await store.claim("p")
    await store.claim("p")
    with pytest.raises(StaleGenerationError) as refused:
        await store.save(Checkpoint("p", old.generation, {"a": 1}))
    assert refused.value.current == 2 and refused.value.ours == 1
    loaded = await store.load("p")
    assert loaded is not None and loaded.positions == {}


async def test_positions_are_merged_and_shared_claims_do_not_fence(store: CheckpointStore) -> None:
    one = await store.claim("p", shared=True)
    two = await store.claim("p", shared=True)
    assert one.generation == two.generation
    await store.save(Checkpoint("p", one.generation, {"t:0": 10, "t:1": 3}))
    await store.save(Checkpoint("p", two.generation, {"t:1": 7, "t:2": 1}))
    loaded = await store.load("p")
    assert loaded is not None and loaded.positions == {"t:0": 10, "t:1": 7, "t:2": 1}


async def test_pipelines_are_independent(store: CheckpointStore) -> None:
    a = await store.claim("a")
    await store.claim("b")
    await store.save(Checkpoint("a", a.generation, {"x": 1}))
    assert await store.load("b") is not None
    loaded_b = await store.load("b")
    assert loaded_b is not None and loaded_b.positions == {}


async def test_file_store_fence_holds_across_processes(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path)
    ours = await store.claim("orders.stream")
    code = (
        "import asyncio; from fluxion_flows.checkpoint import FileCheckpointStore;"
        f"asyncio.run(FileCheckpointStore({str(tmp_path)!r}).claim('orders.stream'))"
    )
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], check=True)
    with pytest.raises(StaleGenerationError):
        await store.save(Checkpoint("orders.stream", ours.generation, {"x": 1}))


WRITER = """
import asyncio, sys, time
from fluxion_flows.checkpoint import Checkpoint, FileCheckpointStore
async def main():
    store = FileCheckpointStore(sys.argv[1])
    claim = await store.claim("p")
    n = claim.positions.get("n", 0)
    print("ready", flush=True)
    while True:
        n += 1
        await store.save(Checkpoint("p", claim.generation, {"n": n}, {"blob": "x" * 20000}, time.time(), n))
asyncio.run(main())
"""


def test_file_store_survives_kill_9_at_any_instant(tmp_path: Path) -> None:
    rng = random.Random(1234)
    last = 0
    for _ in range(10):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.2))  # the kill moment itself is what is being randomised
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        raw = (tmp_path / "p.checkpoint.json").read_bytes()
        loaded = Checkpoint.from_dict(orjson.loads(raw))
        assert loaded.positions["n"] >= last
        assert loaded.stage_state == {"blob": "x" * 20000}
        last = loaded.positions["n"]
    assert last > 0
