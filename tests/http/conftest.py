"""Fixtures for HTTP sink tests: a scripted loopback server and sinks built through the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from fluxion_flows.connectors.http import HttpSinkProvider
from fluxion_flows.connectors.http.circuit_breaker import reset_circuit_breakers
from fluxion_flows.connectors.http.retry import reset_retry_instances
from fluxion_flows.connectors.http.sink import HttpSink
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import ConnectorKind, SinkContext
from tests.support.http_server import ScriptedHttpServer

FAST_RETRY = {"maxAttempts": 5, "waitDuration": "5ms", "multiplier": 1.5, "randomizationFactor": 0.2}

MakeSink = Callable[..., Awaitable[HttpSink]]


@pytest.fixture(autouse=True)
def _fresh_named_instances() -> Iterator[None]:
    """Named retry / breaker instances are process-wide; each test starts without any."""
    reset_circuit_breakers()
    reset_retry_instances()
    yield
    reset_circuit_breakers()
    reset_retry_instances()


@pytest.fixture
def registry() -> ProviderRegistry:
    return ProviderRegistry(extra=[HttpSinkProvider()])


@pytest.fixture
def server() -> Iterator[ScriptedHttpServer]:
    with ScriptedHttpServer() as running:
        yield running


@pytest.fixture
async def make_sink(registry: ProviderRegistry) -> AsyncIterator[MakeSink]:
    """Build, open and (at teardown) close sinks from raw options, exactly as a manifest block would."""
    sinks: list[HttpSink] = []

    async def build(where: str = "test.sink", **options: Any) -> HttpSink:
        options.setdefault("retry", dict(FAST_RETRY))
        config = registry.configure(ConnectorKind.SINK, "http", options, path=(where,))
        sink = registry.create_sink(SinkContext(pipeline_id="test", path=where), config)
        assert isinstance(sink, HttpSink)
        await sink.open()
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        await sink.close()
