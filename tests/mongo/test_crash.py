"""Crash safety: ``fluxion run`` killed with SIGKILL at random moments while a writer works.

The pipeline (change stream with an initial snapshot → replace-by-_id sink
with deletes applied, file checkpoints) runs as a real subprocess of the CLI,
which runs it as a Prefect flow (against one local Prefect API for the
module, so a restart does not wait for a new API each time). A writer inserts
then updates 20,000 documents in four phases; during each phase, once the
current run has committed a checkpoint, the test waits a random 0-1.5 s and
kills the run's process group with SIGKILL, then restarts it. At the end the
target collection must equal the source collection: at-least-once delivery
plus idempotent writes make every crash invisible in the result.

DEVIATION (nx-27017): the server keeps change history only up to 1000 rows
behind the slowest *open* stream and silently resumes a stale token from the
oldest row it kept. A pipeline that has read far beyond its last checkpoint
and is then killed would lose events there (on MongoDB the oplog window is
hours, and a lost position is a ResumeTokenLostError). So this run keeps its
read-ahead well below 1000 events: small source batches and queue, sequential
hand-off, a checkpoint every 100 documents; and the test holds one idle change
stream of its own open for the whole run, which pins the server's history
while a killed pipeline is down (a real oplog needs no such help).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.mongo.conftest import wait_for
from tests.support.mongo_server import MongoServer

Client = AsyncMongoClient[dict[str, Any]]
DOCUMENTS = 20_000
CHUNK = 500

MANIFEST = """\
schemaVersion: "1.0.0"
id: mongo-crash
version: "1.0.0"
operations: {{copy: {{$ref: "#/operationDefs/copy"}}}}
operationDefs:
  copy:
    operationId: copy
    kind: trigger
    execution:
      type: streaming
      source:
        type: mongodb
        connectionString: ${{FLUXION_TEST_MONGO_URI}}
        database: {db}
        collection: source
        initialSnapshot: true
        maxBatchSize: 100
        queueCapacity: 2
        maxAwaitTime: PT0.2S
      sink:
        type: mongodb
        connectionString: ${{FLUXION_TEST_MONGO_URI}}
        database: {db}
        collection: target
        mode: replace
        applyDeletes: true
runtime:
  microBatchSize: 100
  queueCapacity: 200
  directHandoff: true
  maxBatchWait: PT0.1S
checkpoint:
  store: file
  directory: {checkpoints}
  interval: PT0.3S
  everyDocuments: 100
"""


def plugin_path(tmp_path: Path) -> str:
    """A directory registering the mongodb entry points, unless the installed project already does.

    The connector is a plugin: this is exactly how a third-party distribution
    registers it (a dist-info with entry_points.txt), so the CLI finds it
    through the registry with no special casing.
    """
    groups = ("fluxion_flows.sources", "fluxion_flows.sinks")
    if all(any(e.name == "mongodb" for e in entry_points(group=g)) for g in groups):
        return ""
    info = tmp_path / "plugin" / "fluxion_connect_mongo_tests-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fluxion-connect-mongo-tests\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [fluxion_flows.sources]
            mongodb = fluxion_connect_mongo:MongoSourceProvider

            [fluxion_flows.sinks]
            mongodb = fluxion_connect_mongo:MongoSinkProvider
            """
        )
    )
    return str(info.parent)


class PipelineProcess:
    """``fluxion run`` in its own process group, so SIGKILL takes nothing else down."""

    def __init__(self, manifest: Path, env: dict[str, str], log: Path, checkpoints: Path) -> None:
        self.manifest = manifest
        self.env = env
        self.log = log
        self.checkpoints = checkpoints
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.kills = 0

    def start(self) -> None:
        self.started_at = time.time()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fluxion_flows", "run", str(self.manifest), "--quiet"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def working(self) -> bool:
        """True once this run committed a checkpoint: it is past start-up and moving data."""
        assert self.alive(), self.log.read_text()[-3000:]
        return any(f.stat().st_mtime >= self.started_at for f in self.checkpoints.glob("*") if f.is_file())

    def kill(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.kills += 1
        self.process.wait(timeout=10)
        assert self.process.returncode in (-signal.SIGKILL, 0), self.log.read_text()[-3000:]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


async def write_workload(client: Client, db: str, crashed: asyncio.Event) -> None:
    """Insert 20k documents, then update every one (a few twice), in phases; a crash between phases."""
    source = client[db].source

    keys = [f"k{i:05d}" for i in range(DOCUMENTS)]
    half = DOCUMENTS // 2
    for first, last in ((0, half), (half, DOCUMENTS)):
        for start in range(first, last, CHUNK):
            chunk = keys[start : start + CHUNK]
            await source.insert_many([{"_id": k, "n": start + i, "v": 0} for i, k in enumerate(chunk)])
        await _next_crash(crashed)
    for first, last in ((0, half), (half, DOCUMENTS)):
        for start in range(first, last, CHUNK):
            span = {"$gte": keys[start], "$lt": f"k{start + CHUNK:05d}"}
            await source.update_many({"_id": span}, {"$inc": {"v": 1}})
        await _next_crash(crashed)
    await source.update_many({"_id": {"$lt": "k00100"}}, {"$set": {"twice": True}})


async def _next_crash(crashed: asyncio.Event) -> None:
    """Let the pipeline crash at least once while these writes are in flight."""
    crashed.clear()
    await crashed.wait()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One local Prefect API for every `fluxion run` of the module (each run would start its own)."""
    from fluxion_flows.prefect.server import EmbeddedServer

    home = tmp_path_factory.mktemp("prefect-home")
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    server = EmbeddedServer()
    try:
        server.start()
        server.wait_ready()
        yield {"PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(home)}
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous


@pytest.mark.slow
async def test_sigkill_at_random_moments_loses_nothing(
    mongo_server: MongoServer, client: Client, db_name: str, tmp_path: Path, prefect_api: dict[str, str]
) -> None:
    seed = int(os.environ.get("FLUXION_CHAOS_SEED", "27017"))
    rng = random.Random(seed)
    checkpoints = tmp_path / "checkpoints"
    manifest = tmp_path / "copy.yaml"
    manifest.write_text(MANIFEST.format(db=db_name, checkpoints=checkpoints))
    env = {**os.environ, **prefect_api, "FLUXION_TEST_MONGO_URI": mongo_server.uri}
    extra = plugin_path(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, os.getcwd(), env.get("PYTHONPATH", "")) if p)
    pipeline = PipelineProcess(manifest, env, tmp_path / "pipeline.log", checkpoints)
    crashed = asyncio.Event()

    history_pin = await client[db_name].source.watch()  # never read: see the DEVIATION note
    pipeline.start()
    writer = asyncio.create_task(write_workload(client, db_name, crashed))
    try:
        while not writer.done():
            # A random moment once the run moves data: snapshot, streaming, or a checkpoint write.
            await wait_for(pipeline.working, deadline=60)
            await asyncio.wait({writer}, timeout=rng.uniform(0.0, 1.5))
            pipeline.kill()
            crashed.set()
            pipeline.start()
        await writer
        source, target = client[db_name].source, client[db_name].target
        await wait_for(lambda: _converged(source, target, pipeline), deadline=120)
    finally:
        if not writer.done():
            writer.cancel()
        if pipeline.alive():
            pipeline.kill()  # graceful shutdown is not under test here
        await history_pin.close()
    assert pipeline.kills >= 4, f"seed {seed}: the pipeline was killed only {pipeline.kills} time(s)"
    assert await client[db_name].target.count_documents({}) == DOCUMENTS


async def _converged(source: Any, target: Any, pipeline: PipelineProcess) -> bool:
    assert pipeline.alive(), pipeline.log.read_text()[-3000:]
    if await target.count_documents({}) != await source.count_documents({}):
        return False
    expected = await source.find({}).to_list(None)
    actual = await target.find({}).to_list(None)
    return sorted(expected, key=lambda d: d["_id"]) == sorted(actual, key=lambda d: d["_id"])
