"""Option validation: clear errors naming the (nested) key, connection-shaped configs accepted."""

from __future__ import annotations

from typing import Any

import pytest

from fluxion_flows.connectors.http import HttpSinkProvider, HttpSinkSettings
from fluxion_flows.errors import OptionError
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import ConnectorKind, Secret, SinkContext

WHERE = ("operationDefs", "orders", "execution", "sink")


def settings(registry: ProviderRegistry, **options: Any) -> HttpSinkSettings:
    config = registry.configure(ConnectorKind.SINK, "http", options, file="m.yaml", path=WHERE)
    return HttpSinkSettings.from_config(config)


def error(registry: ProviderRegistry, **options: Any) -> str:
    with pytest.raises(OptionError) as caught:
        settings(registry, **options)
    return str(caught.value)


def test_descriptor_and_defaults(registry: ProviderRegistry) -> None:
    assert HttpSinkProvider().descriptor().type == "http"
    s = settings(registry, endpoint="http://h/x")
    assert (s.method, s.format, s.allow_empty, s.gzip, s.http2) == ("POST", "json-array", False, False, False)
    assert s.idempotency_header == "Idempotency-Key"
    assert s.retry.max_attempts == 3 and s.retry.retry_statuses == {408, 429, 500, 502, 503, 504}
    assert s.circuit_breaker is None  # only when configured


def test_a_connection_config_merged_into_the_options_is_accepted(registry: ProviderRegistry) -> None:
    connection = {
        "endpoint": "https://api.example.com/v1",
        "headers": {"X-Tenant": "acme", "X-Api-Key": Secret("k")},
        "timeout": {"connect": "PT2S", "read": "10s"},
        "retry": {"maxAttempts": 5, "waitDuration": "PT0.2S", "multiplier": 2, "retryOn": [503, "5xx"]},
        "circuitBreaker": {"failureRateThreshold": 25, "slidingWindowType": "time", "slidingWindowSize": 30},
        "connectionRef": "http.orders",
        "connectionScope": {"tenantId": "acme", "pipelineId": "orders"},
        "fanout": [{"type": "memory"}],
    }
    s = settings(registry, **connection, path="/orders")
    assert s.endpoint == "https://api.example.com/v1/orders"
    assert (s.timeouts.connect, s.timeouts.read, s.timeouts.write) == (2.0, 10.0, 30.0)
    assert s.retry.max_attempts == 5 and 599 in s.retry.retry_statuses
    assert s.circuit_breaker is not None and s.circuit_breaker.window_type == "time"
    assert "'k'" not in repr(s)


def test_scalar_timeout_applies_to_every_phase(registry: ProviderRegistry) -> None:
    s = settings(registry, endpoint="http://h", timeout="PT1.5S")
    assert (s.timeouts.connect, s.timeouts.read, s.timeouts.write, s.timeouts.pool) == (1.5, 1.5, 1.5, 1.5)


def test_missing_endpoint(registry: ProviderRegistry) -> None:
    message = error(registry, method="POST")
    assert "operationDefs.orders.execution.sink.endpoint" in message and "urlTemplate" in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            {"retry": {"maxAtempts": 3}},
            "sink.retry.maxAtempts: unknown option `maxAtempts`; did you mean `maxAttempts`?",
        ),
        ({"retry": {"maxAttempts": 0}}, "sink.retry.maxAttempts: `maxAttempts` must be at least 1"),
        ({"retry": {"waitDuration": "soon"}}, "sink.retry.waitDuration: invalid value"),
        ({"retry": {"retryOn": [503, 99]}}, "sink.retry.retryOn[1]: `99` is neither an HTTP status"),
        ({"circuitBreaker": {"failureRateThreshold": 150}}, "sink.circuitBreaker.failureRateThreshold"),
        ({"circuitBreaker": {"slidingWindowType": "sliding"}}, "sink.circuitBreaker.slidingWindowType"),
        ({"timeout": {"connnect": 1}}, "sink.timeout.connnect: unknown option"),
        ({"timeout": "forever"}, "sink.timeout: invalid value for option `timeout`"),
        ({"format": "xml"}, "sink.format: invalid value for option `format`: expected one of json-array"),
        ({"method": "GET"}, "expected one of POST, PUT"),
        ({"endpoint": "ftp://h/x"}, "sink.endpoint: expected an absolute http:// or https:// URL"),
        ({"headers": {"X-A": ["list"]}}, "sink.headers.X-A: a header value must be a string"),
        ({"auth": "bearer"}, "sink.bearerToken: auth: bearer needs `bearerToken`"),
        ({"concurrency": 0}, "sink.concurrency: `concurrency` must be at least 1"),
        ({"endpont": "http://h"}, "did you mean `endpoint`?"),
    ],
)
def test_invalid_options_name_the_key(
    registry: ProviderRegistry, options: dict[str, Any], expected: str
) -> None:
    options = {"endpoint": "http://h/x", **options}
    assert expected in error(registry, **options)


def test_secret_options_stay_wrapped(registry: ProviderRegistry) -> None:
    config = registry.configure(ConnectorKind.SINK, "http", {"endpoint": "http://h", "bearerToken": "abc123"})
    assert isinstance(config["bearerToken"], Secret)
    assert "abc123" not in str(config.redacted())
    s = HttpSinkSettings.from_config(config)
    assert "abc123" not in repr(s)


def test_relative_url_template_needs_an_endpoint(registry: ProviderRegistry) -> None:
    assert "relative `urlTemplate` needs `endpoint`" in error(registry, urlTemplate="items/{id}")


def test_provider_creates_a_sink_without_io() -> None:
    registry = ProviderRegistry(extra=[HttpSinkProvider()])
    config = registry.configure(ConnectorKind.SINK, "http", {"endpoint": "http://127.0.0.1:9/x"})
    sink = registry.create_sink(SinkContext(pipeline_id="p"), config)
    assert sink.metrics()["requests"] == 0


def test_nested_mistakes_surface_when_the_block_is_configured(registry: ProviderRegistry) -> None:
    with pytest.raises(OptionError) as caught:
        registry.configure(
            ConnectorKind.SINK,
            "http",
            {"endpoint": "http://h", "retry": {"maxAtempts": 2}},
            file="m.yaml",
            path=WHERE,
        )
    assert str(caught.value).startswith(
        "m.yaml: operationDefs.orders.execution.sink.retry.maxAtempts: unknown option"
    )
    assert caught.value.path == (*WHERE, "retry", "maxAtempts")
