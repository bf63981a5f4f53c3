"""The HTTP sink inside the executor: dead letters, backpressure, crash-and-replay, fanout, connections."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.connectors.http import HttpSinkProvider
from fluxion_flows.connectors.memory import MemorySink
from fluxion_flows.errors import ConnectionsError
from fluxion_flows.executor import StreamingPipelineExecutor
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import ProviderRegistry
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer

ROOT = Path(__file__).resolve().parents[2]


def manifest(
    source: dict[str, Any],
    sink: dict[str, Any],
    *,
    scope: str = "default::default",
    runtime: dict[str, Any] | None = None,
    error_policy: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    execution: dict[str, Any] = {"type": "streaming", "source": source, "sink": sink}
    execution["runtime"] = {"maxBatchWait": "50ms", "metricsInterval": "100ms", **(runtime or {})}
    if error_policy:
        execution["errorPolicy"] = error_policy
    execution["checkpoint"] = checkpoint or {"store": "memory"}
    return {"id": "http-it", "scope": scope, "operationDefs": {"deliver": {"execution": execution}}}


def pipeline(document: dict[str, Any], connections: Path | None = None) -> Pipeline:
    registry = ProviderRegistry(extra=[HttpSinkProvider()])
    return Pipeline.from_manifest(document, connections=connections, registry=registry)


async def executor_for(
    document: dict[str, Any], connections: Path | None = None
) -> StreamingPipelineExecutor:
    return await pipeline(document, connections).executor(store=MemoryCheckpointStore())


def received_at_least(server: ScriptedHttpServer, n: int) -> Callable[[], bool]:
    return lambda: len(server.requests) >= n


@pytest.fixture
def dlq() -> Iterator[str]:
    name = f"dlq-{os.getpid()}-{id(object())}"
    yield name
    MemorySink.reset(name)


async def test_client_error_batch_goes_to_the_dead_letter_sink_with_status_and_body(
    server: ScriptedHttpServer, dlq: str
) -> None:
    def reject_second_batch(request: RecordedRequest) -> Reply | None:
        if request.json()[0]["orderId"] == 10:
            return Reply(422, body={"error": "orderId 10: total must be positive"})
        return None

    server.responder = reject_second_batch
    document = manifest(
        {"type": "generator", "count": 30},
        {"type": "http", "endpoint": server.url + "/orders", "retry": {"waitDuration": "1ms"}},
        runtime={"microBatchSize": 10},
        error_policy={
            "policy": "retry",
            "maxRetries": 3,
            "then": "deadLetter",
            "sink": {"type": "memory", "name": dlq},
        },
    )
    result = await (await executor_for(document)).run()

    (envelope,) = MemorySink.store(dlq)
    assert envelope["error"]["status"] == 422
    assert "total must be positive" in envelope["error"]["body_excerpt"]
    assert envelope["error"]["type"] == "HttpStatusError"
    assert envelope["attempts"] == 1  # non-retryable: the executor's retries were skipped too
    # the executor halves the rejected batch until the document the server refuses is isolated
    assert [d["orderId"] for d in envelope["documents"]] == [10]
    accepted = sorted(d["orderId"] for d in server.documents("/orders"))
    assert accepted == [n for n in range(30) if n != 10]
    assert result.metrics["deadLettered"] == 1
    assert sum(r.status == 422 for r in server.received("/orders")) == 4  # batch, halves, no retries


async def test_slow_server_backpressure_keeps_queues_at_their_bounds(server: ScriptedHttpServer) -> None:
    server.default = Reply(200, delay=0.03)
    capacity, batch = 100, 25
    document = manifest(
        {"type": "generator"},  # unbounded and fast: only backpressure can hold it
        {"type": "http", "endpoint": server.url + "/slow"},
        runtime={"microBatchSize": batch, "queueCapacity": capacity},
    )
    executor = await executor_for(document)
    run = asyncio.create_task(executor.run())
    in_flight_bound = 2 * capacity + 3 * batch  # two queues, plus one batch held by each of the three tasks
    try:
        for requests in (6, 12, 18):
            await server.until(received_at_least(server, requests), what=f"{requests} requests")
            m = executor.metrics
            assert m.transform_queue.max <= capacity
            assert m.delivery_queue.max <= capacity
            assert m.documents_in - m.documents_out <= in_flight_bound
        assert m.transform_queue.max == capacity  # the queues really filled: backpressure held the source
    finally:
        executor.stop()
        result = await run
    assert result.metrics["documentsOut"] == len(server.documents("/slow"))
    details = result.metrics["sinks"][0]["details"]
    assert details["requests"] == len(server.requests)
    assert details["documents"] == result.metrics["documentsOut"]


async def test_fanout_delivers_the_same_batch_to_each_sink_in_order(server: ScriptedHttpServer) -> None:
    document = manifest(
        {"type": "generator", "count": 30},
        {
            "type": "http",
            "endpoint": server.url + "/main",
            "fanout": [
                {"type": "http", "endpoint": server.url + "/audit", "format": "ndjson"},
                {"type": "http", "endpoint": server.url + "/search"},
            ],
        },
        runtime={"microBatchSize": 10, "directHandoff": True},
    )
    await (await executor_for(document)).run()

    paths = [r.path for r in server.requests]
    assert paths == ["/main", "/audit", "/search"] * 3
    for index in range(0, 9, 3):
        main, audit, search = server.requests[index : index + 3]
        assert main.json() == audit.ndjson() == search.json()
        assert (
            main.header("idempotency-key")
            == audit.header("idempotency-key")
            == search.header("idempotency-key")
        )


def write_connections(tmp_path: Path, server: ScriptedHttpServer) -> Path:
    entries = [
        {
            "connectionRef": "http.orders",
            "scope": {"tenantId": "acme"},
            "config": {
                "type": "http",
                "endpoint": server.url + "/acme",
                "headers": {"X-Tenant": "acme"},
                "timeout": {"connect": "PT2S", "read": "PT5S"},
                "retry": {"maxAttempts": 4, "waitDuration": "PT0.001S"},
            },
        },
        {
            "connectionRef": "http.orders",
            "scope": {"tenantId": "globex", "pipelineId": "billing"},
            "config": {
                "type": "http",
                "endpoint": server.url + "/globex",
                "headers": {"X-Tenant": "globex"},
                "bearerToken": "globex-token",
                "retry": {"maxAttempts": 1},
            },
        },
    ]
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump(entries))
    return path


async def test_connection_ref_resolves_within_its_scope_only(
    server: ScriptedHttpServer, tmp_path: Path
) -> None:
    connections = write_connections(tmp_path, server)
    server.script(Reply(503), Reply(503), path="/acme")  # retried with the connection's retry settings
    sink = {"type": "http", "connectionRef": "http.orders", "path": "/v1"}
    acme = manifest({"type": "generator", "count": 5}, sink, scope="acme::orders")
    await (await executor_for(acme, connections)).run()

    assert server.documents("/acme/v1") and not server.received("/globex/v1")
    assert {r.header("x-tenant") for r in server.received("/acme/v1")} == {"acme"}
    assert all(r.header("authorization") is None for r in server.received("/acme/v1"))

    globex = manifest({"type": "generator", "count": 5}, {**sink, "connectionScope": "globex::billing"})
    await (await executor_for(globex, connections)).run()
    (request,) = server.received("/globex/v1")
    assert request.header("x-tenant") == "globex"
    assert request.header("authorization") == "Bearer globex-token"

    with pytest.raises(ConnectionsError, match="never cross tenants"):
        pipeline(manifest({"type": "generator", "count": 5}, sink, scope="initech::orders"), connections)
    with pytest.raises(ConnectionsError, match="never cross tenants"):
        pipeline(manifest({"type": "generator", "count": 5}, sink, scope="globex::other"), connections)


def run_replay_subprocess(manifest_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.http.replay_runner", str(manifest_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_idempotency_key_is_stable_across_a_crash_and_replay(
    server: ScriptedHttpServer, tmp_path: Path
) -> None:
    source = tmp_path / "orders.jsonl"
    source.write_text("".join(json.dumps({"orderId": n, "total": n * 1.5}) + "\n" for n in range(200)))
    server.default = Reply(200, delay=0.02)
    document = manifest(
        {"type": "file", "path": str(source)},
        {"type": "http", "endpoint": server.url + "/orders"},
        runtime={"microBatchSize": 10},
        checkpoint={
            "store": "file",
            "directory": str(tmp_path / "checkpoints"),
            "everyDocuments": 30,
            "interval": 600,
        },
    )
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(document))

    crashed = run_replay_subprocess(manifest_path)
    try:
        await server.until(lambda: len(server.requests) >= 9, within=60, what="the first run to deliver")
    finally:
        crashed.kill()  # SIGKILL: no graceful shutdown, no final checkpoint
        await asyncio.to_thread(crashed.wait)
    first_run = len(server.requests)
    assert first_run < 20, "the first run must be killed before it finishes"

    replay = run_replay_subprocess(manifest_path)
    _out, err = await asyncio.to_thread(replay.communicate, timeout=120)
    assert replay.returncode == 0, err.decode()[-2000:]

    by_batch: dict[tuple[int, ...], set[str]] = {}
    for request in server.requests:
        ids = tuple(d["orderId"] for d in request.json())
        by_batch.setdefault(ids, set()).add(request.header("idempotency-key") or "")
    assert all(len(keys) == 1 for keys in by_batch.values()), "one batch, one key, in both runs"
    assert len({next(iter(k)) for k in by_batch.values()}) == len(by_batch), (
        "different batches, different keys"
    )
    replayed = {tuple(d["orderId"] for d in r.json()) for r in server.requests[:first_run]} & {
        tuple(d["orderId"] for d in r.json()) for r in server.requests[first_run:]
    }
    assert replayed, "the second run must have replayed batches the first run had sent"
    assert sorted({d["orderId"] for d in server.documents("/orders")}) == list(range(200))
