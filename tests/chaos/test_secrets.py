"""Secrets never leak: runs that use secrets and fail in every way, scanned for the secret values.

Each secret comes from ``secret://env/...`` with a random value. The
scenarios (each fails somewhere, on purpose) are:

- loading manifests whose secret sits next to a mistake, or is itself used
  where it cannot be (a secret where a duration is expected), or is missing;
- ``fluxion validate`` and ``fluxion connectors show`` on them;
- a run whose Kafka source needs a SASL password the broker refuses
  (Tansu does not speak SASL: the source fails at start);
- a run whose HTTP sink sends a bearer token to a server answering 401/400,
  dead-lettered to a file;
- ``discover_streams`` catalogs of the Kafka source (reachable and not);
- MongoDB with the password in the connection string: a source and a sink
  on a server that refuses the login, a sink on a port nobody listens on,
  a malformed URI carrying the password, and the catalogs;
- Event Hubs with the key in the connection string (``SharedAccessKey=``):
  a run that works, a source and a sink on a hub that does not exist, a
  malformed connection string carrying the key, and the catalogs;
- the Prefect flow (against the session's API): a manifest with the Event
  Hubs key, the HTTP bearer token and the Mongo password runs as a flow
  (Event Hubs → HTTP answering 401/400, dead-lettered to a MongoDB sink that
  refuses the login: the run fails); then the flow run's artifacts, events,
  logs and state are read back through the Prefect client.

Every log record (caplog at DEBUG, including third-party loggers), exception
message and traceback text, CLI output, catalog, pipeline description,
metrics snapshot and the dead-letter file is collected into one
:class:`Texts` and scanned: zero occurrences of any secret value.
``SECRETS`` and ``SCENARIOS`` are the extension points for the next secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from typer.testing import CliRunner

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.prefect.flow import run_manifest
from fluxion_flows.registry import default_registry
from fluxion_flows.spi import RunMode
from tests.support.eventhub_emulator import EventHubEmulator
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer
from tests.support.kafka_broker import TansuBroker, free_port
from tests.support.mongo_server import MongoServer

SECRETS = {
    "CHAOS_HTTP_TOKEN": "tok-" + secrets.token_hex(12),
    "CHAOS_KAFKA_PASSWORD": "pw-" + secrets.token_hex(12),
    "CHAOS_MONGO_PASSWORD": "mpw-" + secrets.token_hex(12),
    "CHAOS_EVENTHUB_KEY": "key" + secrets.token_hex(16) + "=",
}


@dataclass
class Texts:
    """Everything a user or operator could see, by origin; scanned for secret values at the end."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, origin: str, value: Any) -> None:
        text = value if isinstance(value, str) else orjson.dumps(value, default=repr).decode()
        self.items.append((origin, text))

    def add_error(self, origin: str, error: BaseException) -> None:
        self.add(origin, f"{type(error).__name__}: {error}\n" + "".join(traceback.format_exception(error)))

    def leaks(self) -> list[str]:
        found = []
        for origin, text in self.items:
            for name, value in SECRETS.items():
                if value in text:
                    at = text.index(value)
                    found.append(f"{name} in {origin}: ...{text[max(0, at - 80) : at]}<SECRET>...")
        return found


def execution(source: dict[str, Any], sink: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "secrets",
        "operationDefs": {
            "flow": {
                "execution": {
                    "type": "streaming",
                    "source": source,
                    "sink": sink,
                    "checkpoint": {"store": "memory"},
                    **extra,
                }
            }
        },
    }


def kafka_source(bootstrap: str, topic: str, protocol: str = "SASL_PLAINTEXT") -> dict[str, Any]:
    return {
        "type": "kafka",
        "bootstrapServers": bootstrap,
        "topic": topic,
        "securityProtocol": protocol,
        "saslMechanism": "PLAIN",
        "saslUsername": "fluxion",
        "saslPassword": "secret://env/CHAOS_KAFKA_PASSWORD",
    }


def http_sink(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "endpoint": url,
        "bearerToken": "secret://env/CHAOS_HTTP_TOKEN",
        "retry": {"maxAttempts": 2, "waitDuration": "5ms"},
        **extra,
    }


def mongo_uri(port: int) -> str:
    """A connection string with the password in it, as users write them (resolved from the environment)."""
    return (
        f"mongodb://fluxion:${{CHAOS_MONGO_PASSWORD}}@127.0.0.1:{port}/"
        "?directConnection=true&serverSelectionTimeoutMS=1500&connectTimeoutMS=1500"
    )


def eventhub_string(port: int, hub: str) -> str:
    """The SDK's emulator-mode connection string with our secret key (the emulator accepts any key)."""
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=fluxion;"
        f"SharedAccessKey=${{CHAOS_EVENTHUB_KEY}};UseDevelopmentEmulator=true;EntityPath={hub}"
    )


def mongo(port: int, kind: str, **extra: Any) -> dict[str, Any]:
    block = {"type": "mongodb", "connectionString": mongo_uri(port), "database": "secrets", **extra}
    if kind == "sink":
        block.setdefault("collection", "target")
    block.setdefault("reconnectTimeout", "PT1S")
    return block


@dataclass
class World:
    texts: Texts
    tmp: Path
    bootstrap: str
    topic: str
    server: ScriptedHttpServer
    mongo_port: int
    emulator: EventHubEmulator
    hub: str


Scenario = Callable[[World], Awaitable[None]]


async def broken_manifests(world: World) -> None:
    """Load-time errors next to or on a secret: messages and `fluxion validate` output."""
    cases = {
        "option next to a secret": execution(
            {"type": "generator", "count": 1}, http_sink(world.server.url, concurrency="many")
        ),
        "secret where a duration goes": execution(
            {"type": "generator", "count": 1},
            http_sink(world.server.url, timeout="secret://env/CHAOS_HTTP_TOKEN"),
        ),
        "secret-valued int option": execution(
            {
                **kafka_source(world.bootstrap, world.topic),
                "queueCapacity": "secret://env/CHAOS_KAFKA_PASSWORD",
            },
            {"type": "memory"},
        ),
        "missing secret": execution(
            {"type": "generator", "count": 1},
            {**http_sink(world.server.url), "password": "secret://env/CHAOS_UNSET_SECRET"},
        ),
        "secret in a JAAS line with a typo": execution(
            {
                **kafka_source(world.bootstrap, world.topic),
                "saslPassword": None,
                "saslJaasConfig": "org.apache.kafka.common.security.plain.PlainLoginModule requird "
                'username="u" password="${CHAOS_KAFKA_PASSWORD}";',
            },
            {"type": "memory"},
        ),
        "valid": execution(kafka_source(world.bootstrap, world.topic), http_sink(world.server.url)),
    }
    runner = CliRunner()
    from fluxion_flows.cli.app import app

    for name, document in cases.items():
        try:
            pipeline = Pipeline.from_manifest(document)
            world.texts.add(f"describe({name})", pipeline.describe())
            world.texts.add(f"source config repr({name})", repr(pipeline.source_config))
        except Exception as error:
            world.texts.add_error(f"load({name})", error)
        path = world.tmp / f"{name.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(document))
        result = runner.invoke(app, ["validate", str(path)])
        world.texts.add(f"fluxion validate ({name})", result.output)
        if result.exception is not None:
            world.texts.add_error(f"fluxion validate exception ({name})", result.exception)
    for type_id in ("kafka", "http"):
        result = runner.invoke(app, ["connectors", "show", type_id])
        world.texts.add(f"fluxion connectors show {type_id}", result.output)


async def kafka_sasl_refused(world: World) -> None:
    """The source needs SASL; the broker refuses: the run fails at start."""
    document = execution(kafka_source(world.bootstrap, world.topic), {"type": "memory", "name": "secrets"})
    executor = await Pipeline.from_manifest(document).executor(store=MemoryCheckpointStore(), max_duration=10)
    try:
        result = await executor.run()
        world.texts.add("kafka run result", result.metrics)
    except Exception as error:
        world.texts.add_error("kafka run", error)
    world.texts.add("kafka run metrics", executor.metrics.snapshot())


async def http_rejects(world: World, *, echo: bool = False) -> None:
    """Bearer token sent to a server answering 401 and 400; batches dead-lettered to a file.

    With ``echo`` the server repeats the request's Authorization header in its error body, as some
    APIs and proxies do.
    """
    calls = {"n": 0}

    def reject(request: RecordedRequest) -> Reply:
        calls["n"] += 1
        body = {"error": "invalid token", "got": request.header("authorization") if echo else "(hidden)"}
        return Reply(401 if calls["n"] % 2 else 400, body=body)

    world.server.responder = reject
    dead = world.tmp / "dead.jsonl"
    document = execution(
        {"type": "generator", "count": 40},
        http_sink(world.server.url + "/hooks"),
        runtime={"microBatchSize": 10},
        errorPolicy={"policy": "deadLetter", "sink": {"type": "file", "path": str(dead)}},
    )
    executor = await Pipeline.from_manifest(document).executor(store=MemoryCheckpointStore())
    result = await executor.run()
    assert result.metrics["deadLettered"] == 40
    token = SECRETS["CHAOS_HTTP_TOKEN"]
    assert all(r.header("authorization") == f"Bearer {token}" for r in world.server.requests)  # it was used
    world.texts.add("http run metrics", result.metrics)
    world.texts.add("dead-letter file", dead.read_text())


async def catalogs(world: World) -> None:
    """Catalogs of a source configured with a SASL password: one reachable (PLAINTEXT), one refused."""
    registry = default_registry()
    for protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        raw = {k: v for k, v in kafka_source(world.bootstrap, world.topic, protocol).items() if k != "type"}
        pipeline = Pipeline.from_manifest(execution({"type": "kafka", **raw}, {"type": "memory"}))
        provider = registry.source_provider("kafka")
        try:
            streams = await provider.discover_streams(pipeline.source_config)
            world.texts.add(
                f"catalog {protocol}", [vars(s) if hasattr(s, "__dict__") else repr(s) for s in streams]
            )
            world.texts.add(f"catalog repr {protocol}", repr(streams))
        except Exception as error:
            world.texts.add_error(f"catalog {protocol}", error)
        world.texts.add(f"source config redacted {protocol}", pipeline.source_config.redacted())


async def run_for_texts(
    world: World, name: str, document: dict[str, Any], limit: float = 10, mode: RunMode = RunMode.CONTINUOUS
) -> None:
    """Load and run a manifest; its result, error and metrics go into the scanned texts."""
    try:
        pipeline = Pipeline.from_manifest(document)
        world.texts.add(f"describe({name})", pipeline.describe())
        executor = await pipeline.executor(store=MemoryCheckpointStore(), max_duration=limit, mode=mode)
    except Exception as error:
        world.texts.add_error(f"load({name})", error)
        return
    try:
        result = await executor.run()
        world.texts.add(f"{name} result", result.metrics)
    except Exception as error:
        world.texts.add_error(f"{name} run", error)
    world.texts.add(f"{name} metrics", executor.metrics.snapshot())


async def mongo_refused(world: World) -> None:
    """The password travels in the URI: a refused login (source, sink), no server, a malformed URI."""
    port, dead = world.mongo_port, free_port()
    cases = {
        "mongo source refused": execution(mongo(port, "source", collection="source"), {"type": "memory"}),
        "mongo sink refused": execution({"type": "generator", "count": 5}, mongo(port, "sink")),
        "mongo sink unreachable": execution({"type": "generator", "count": 5}, mongo(dead, "sink")),
        "mongo malformed uri": execution(
            {"type": "generator", "count": 5},
            {**mongo(port, "sink"), "connectionString": mongo_uri(port) + "&replicaSet=&w=bogus&tls=perhaps"},
        ),
    }
    for name, document in cases.items():
        await run_for_texts(world, name, document, limit=8, mode=RunMode.DRAIN)
    runner = CliRunner()
    from fluxion_flows.cli.app import app

    for type_id in ("mongodb", "eventhub"):
        result = runner.invoke(app, ["connectors", "show", type_id])
        world.texts.add(f"fluxion connectors show {type_id}", result.output)


async def eventhub_runs(world: World) -> None:
    """The key travels in the connection string: a working run and a malformed connection string.

    (A missing hub costs the SDK's 15 s of retries before it fails; the Prefect scenario covers a
    failing run with the key in it.)
    """
    port = world.emulator.port
    source = {
        "type": "eventhub",
        "connectionString": eventhub_string(port, world.hub),
        "loadBalancingInterval": "1s",
    }
    cases = {
        "eventhub works": execution(source, {"type": "memory", "name": "secrets-eh"}),
        "eventhub malformed string": execution(
            {
                **source,
                "connectionString": "SharedAccessKey=${CHAOS_EVENTHUB_KEY};EntityPath=x;Endpoint=nope",
            },
            {"type": "memory"},
        ),
    }
    await send_events(world)
    for name, document in cases.items():
        await run_for_texts(world, name, document, limit=5, mode=RunMode.DRAIN)


async def connector_catalogs(world: World) -> None:
    """Catalogs of the MongoDB (login refused) and Event Hubs connectors configured with their secrets."""
    registry = default_registry()
    sources = {
        "mongodb refused": mongo(world.mongo_port, "source", collection="source"),
        "eventhub": {"type": "eventhub", "connectionString": eventhub_string(world.emulator.port, world.hub)},
    }
    for name, block in sources.items():
        try:
            pipeline = Pipeline.from_manifest(execution(block, {"type": "memory"}))
            config = pipeline.source_config
            world.texts.add(f"source config redacted {name}", config.redacted())
            world.texts.add(f"source config repr {name}", repr(config))
            streams = await asyncio.wait_for(
                registry.source_provider(block["type"]).discover_streams(config), 30
            )
            world.texts.add(
                f"catalog {name}", [vars(s) if hasattr(s, "__dict__") else repr(s) for s in streams]
            )
        except Exception as error:
            world.texts.add_error(f"catalog {name}", error)


async def prefect_flow_run(world: World) -> None:
    """Secrets through the Prefect flow; then everything Prefect kept about the run, read back."""
    world.server.responder = lambda request: Reply(
        401 if request.path.endswith("1") else 400, body={"error": "no"}
    )
    await send_events(world)
    manifest = world.tmp / "prefect-secrets.yaml"
    document = execution(
        {
            "type": "eventhub",
            "connectionString": eventhub_string(world.emulator.port, world.hub),
            "loadBalancingInterval": "1s",
        },
        http_sink(world.server.url + "/prefect"),
        runtime={"microBatchSize": 5},
        errorPolicy={"policy": "deadLetter", "sink": mongo(world.mongo_port, "sink", collection="dead")},
    )
    manifest.write_text(yaml.safe_dump({"schemaVersion": "1.0.0", **document}))
    state = await run_manifest(str(manifest), mode="drain", return_state=True)
    world.texts.add("prefect flow state", f"{state!r}: {state.message}")
    if isinstance(state.data, BaseException):
        world.texts.add_error("prefect flow state data", state.data)
    assert state.is_failed(), f"the dead-letter sink refuses the login: the run must fail ({state})"
    assert world.server.received("/prefect"), "the flow never reached the HTTP sink"
    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        world.texts.add("prefect flow run", flow_run.model_dump_json())
        deadline = time.monotonic() + 30
        while True:  # events reach the API asynchronously: wait for the run's last one
            page = await client.read_events(
                EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"])),
                limit=50,
            )
            if any(e.event == "fluxion.pipeline.stopped" for e in page.events) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert page.events and artifacts and logs, (
        "Prefect kept nothing about the run: the scan would mean nothing"
    )
    for event in page.events:
        world.texts.add(f"prefect event {event.event}", event.model_dump_json())
    for artifact in artifacts:
        world.texts.add(f"prefect artifact {artifact.key}", artifact.model_dump_json())
    for log in logs:
        world.texts.add(f"prefect log {log.name}", log.message)
    for task_run in task_runs:
        world.texts.add(f"prefect task run {task_run.name}", task_run.model_dump_json())


async def send_events(world: World) -> None:
    producer = EventHubProducerClient.from_connection_string(world.emulator.connection_string(world.hub))
    async with producer:
        batch = await producer.create_batch()
        for n in range(20):
            batch.add(EventData(orjson.dumps({"id": n})))
        await producer.send_batch(batch)


SCENARIOS: list[Scenario] = [
    broken_manifests,
    kafka_sasl_refused,
    http_rejects,
    catalogs,
    mongo_refused,
    eventhub_runs,
    connector_catalogs,
    prefect_flow_run,
]


def collect_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        world.texts.add(f"log {record.name}:{record.levelname}", record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            world.texts.add_error(f"log exception {record.name}", record.exc_info[1])


@pytest.fixture
def world(
    kafka_broker: TansuBroker,
    new_topic: Callable[..., str],
    http_server: ScriptedHttpServer,
    mongo_server: MongoServer,
    eventhub_emulator: EventHubEmulator,
    new_hub: Callable[..., str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    return World(
        Texts(),
        tmp_path,
        kafka_broker.bootstrap,
        new_topic(partitions=1),
        http_server,
        mongo_server.port,
        eventhub_emulator,
        new_hub(partitions=2),
    )


async def test_secret_values_appear_nowhere(world: World, caplog: pytest.LogCaptureFixture) -> None:
    for scenario in SCENARIOS:
        started = time.monotonic()
        await scenario(world)
        print(f"secrets scenario {scenario.__name__}: {time.monotonic() - started:.1f}s")
    collect_logs(world, caplog)
    errors = sum(
        1
        for origin, _ in world.texts.items
        if "exception" in origin or origin.startswith(("load", "kafka run"))
    )
    assert errors >= 5, "the scenarios must fail in several ways for the scan to mean anything"
    assert len(caplog.records) > 10
    leaks = world.texts.leaks()
    print(
        f"secrets: scanned {len(world.texts.items)} texts ({len(caplog.records)} log records), "
        f"{len(leaks)} leaks"
    )
    assert not leaks, "\n".join(leaks)


async def test_a_server_echoing_the_token_does_not_leak_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await http_rejects(world, echo=True)
    collect_logs(world, caplog)
    leaks = world.texts.leaks()
    assert not leaks, "\n".join(leaks)
