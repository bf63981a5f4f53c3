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
- ``discover_streams`` catalogs of the Kafka source (reachable and not).

Every log record (caplog at DEBUG, including third-party loggers), exception
message and traceback text, CLI output, catalog, pipeline description,
metrics snapshot and the dead-letter file is collected into one
:class:`Texts` and scanned: zero occurrences of any secret value.
``SECRETS`` and ``SCENARIOS`` are where the MongoDB connection string, the
Event Hubs key and the Prefect artifacts and events join (with their pairs).
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import default_registry
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer
from tests.support.kafka_broker import TansuBroker

SECRETS = {
    "CHAOS_HTTP_TOKEN": "tok-" + secrets.token_hex(12),
    "CHAOS_KAFKA_PASSWORD": "pw-" + secrets.token_hex(12),
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


@dataclass
class World:
    texts: Texts
    tmp: Path
    bootstrap: str
    topic: str
    server: ScriptedHttpServer


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


SCENARIOS: list[Scenario] = [broken_manifests, kafka_sasl_refused, http_rejects, catalogs]


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
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    return World(Texts(), tmp_path, kafka_broker.bootstrap, new_topic(partitions=1), http_server)


async def test_secret_values_appear_nowhere(world: World, caplog: pytest.LogCaptureFixture) -> None:
    for scenario in SCENARIOS:
        await scenario(world)
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
