"""The circuit breaker opens, half-opens and closes under scripted failure rates."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fluxion_flows.connectors.http import CircuitOpenError, RetriesExhaustedError
from fluxion_flows.connectors.http.circuit_breaker import State
from fluxion_flows.connectors.http.sink import HttpSink
from fluxion_flows.spi import Batch, NonRetryableError
from tests.http.conftest import MakeSink
from tests.support.http_server import RecordedRequest, Reply, ScriptedHttpServer

BREAKER = {
    "failureRateThreshold": 50,
    "minimumNumberOfCalls": 4,
    "slidingWindowSize": 4,
    "waitDurationInOpenState": "150ms",
    "permittedCallsInHalfOpenState": 2,
}


class Switch:
    """A responder that fails while ``failing`` is set."""

    def __init__(self, status: int = 500) -> None:
        self.failing = True
        self.status = status

    def __call__(self, request: RecordedRequest) -> Reply | None:
        return Reply(self.status) if self.failing else None


async def write_expecting(sink: HttpSink, error: type[Exception], key: str) -> None:
    with pytest.raises(error):
        await sink.write(Batch([{"k": key}], key=key))


def state(sink: HttpSink) -> State:
    assert sink._breaker is not None
    return sink._breaker.state


async def breaker_sink(make_sink: MakeSink, url: str, **breaker: Any) -> HttpSink:
    return await make_sink(endpoint=url, retry={"maxAttempts": 1}, circuitBreaker={**BREAKER, **breaker})


async def test_opens_rejects_without_calling_then_half_opens_and_closes(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fluxion_flows")
    switch = Switch()
    server.responder = switch
    sink = await breaker_sink(make_sink, server.url)

    for n in range(4):
        await write_expecting(sink, RetriesExhaustedError, f"f{n}")
    assert state(sink) is State.OPEN
    calls = len(server.requests)

    error: CircuitOpenError | None = None
    try:
        await sink.write(Batch([{"k": "rejected"}], key="r"))
    except CircuitOpenError as exc:
        error = exc
    assert error is not None and not isinstance(error, NonRetryableError)
    assert len(server.requests) == calls  # the endpoint was not called

    await server.until(lambda: state(sink) is State.HALF_OPEN, what="half-open")
    switch.failing = False
    await sink.write(Batch([{"k": "trial-1"}], key="t1"))
    assert state(sink) is State.HALF_OPEN  # 2 trial calls are permitted; 1 done
    await sink.write(Batch([{"k": "trial-2"}], key="t2"))
    assert state(sink) is State.CLOSED

    m = sink.metrics()
    assert (
        m["circuit.transitions.open"],
        m["circuit.transitions.half_open"],
        m["circuit.transitions.closed"],
    ) == (
        1,
        1,
        1,
    )
    assert m["circuit_rejections"] == 1
    assert "CLOSED -> OPEN" in caplog.text and "HALF_OPEN -> CLOSED" in caplog.text


async def test_failed_trial_calls_reopen_the_breaker(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    switch = Switch(503)
    server.responder = switch
    sink = await breaker_sink(make_sink, server.url)
    for n in range(4):
        await write_expecting(sink, RetriesExhaustedError, f"f{n}")
    await server.until(lambda: state(sink) is State.HALF_OPEN, what="half-open")

    await write_expecting(sink, RetriesExhaustedError, "t1")
    await write_expecting(sink, RetriesExhaustedError, "t2")
    assert state(sink) is State.OPEN
    assert sink.metrics()["circuit.transitions.open"] == 2


async def test_stays_closed_below_the_failure_rate(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    sink = await breaker_sink(make_sink, server.url, slidingWindowSize=10, minimumNumberOfCalls=10)
    outcomes = [500, 200, 200, 500, 200, 200, 500, 200, 200, 200, 500, 200]  # at most 40% failures per window
    server.script(*[Reply(s) for s in outcomes])
    for n, status in enumerate(outcomes):
        if status == 500:
            await write_expecting(sink, RetriesExhaustedError, f"x{n}")
        else:
            await sink.write(Batch([{"n": n}], key=f"x{n}"))
    assert state(sink) is State.CLOSED


async def test_not_before_minimum_number_of_calls(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    server.default = Reply(500)
    sink = await breaker_sink(make_sink, server.url, minimumNumberOfCalls=6, slidingWindowSize=10)
    for n in range(5):
        await write_expecting(sink, RetriesExhaustedError, f"f{n}")
        assert state(sink) is State.CLOSED
    await write_expecting(sink, RetriesExhaustedError, "f5")
    assert state(sink) is State.OPEN


async def test_slow_calls_open_the_breaker(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    sink = await breaker_sink(
        make_sink,
        server.url,
        slowCallDurationThreshold="20ms",
        slowCallRateThreshold=50,
        failureRateThreshold=100,
    )
    server.default = Reply(200, delay=0.1)  # successful but slow
    for n in range(4):
        await sink.write(Batch([{"n": n}], key=f"s{n}"))
    assert state(sink) is State.OPEN
    assert sink.metrics()["circuit.window.calls"] == 0  # a fresh window per state


async def test_client_errors_do_not_count_as_failures(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.default = Reply(400, body="bad doc")
    sink = await breaker_sink(make_sink, server.url)
    for n in range(6):
        await write_expecting(sink, NonRetryableError, f"b{n}")
    assert state(sink) is State.CLOSED


async def test_retries_stop_as_soon_as_the_breaker_opens(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.default = Reply(503)
    sink = await make_sink(
        endpoint=server.url,
        retry={"maxAttempts": 50, "waitDuration": "1ms"},
        circuitBreaker={**BREAKER, "waitDurationInOpenState": "60s"},
    )
    with pytest.raises(CircuitOpenError):
        await sink.write(Batch([{"n": 1}], key="k"))
    assert len(server.requests) == 4


async def test_named_breaker_is_shared_between_sinks(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    server.default = Reply(500)
    shared = {"circuitBreakerInstance": "orders-api", "retry": {"maxAttempts": 1}}
    a = await make_sink(endpoint=server.url + "/a", circuitBreaker=dict(BREAKER), **shared)
    b = await make_sink(endpoint=server.url + "/b", **shared)
    for n in range(4):
        await write_expecting(a, RetriesExhaustedError, f"f{n}")

    await write_expecting(b, CircuitOpenError, "b1")
    assert server.received("/b") == []
    assert a._breaker is b._breaker
    other = await make_sink(
        endpoint=server.url + "/c", circuitBreakerInstance="billing-api", retry={"maxAttempts": 1}
    )
    await write_expecting(other, RetriesExhaustedError, "c1")  # a different instance is unaffected


async def test_differing_inline_settings_for_a_named_breaker_are_reported(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxion_flows")
    await make_sink(endpoint=server.url, circuitBreakerInstance="x", circuitBreaker=dict(BREAKER))
    await make_sink(endpoint=server.url, circuitBreakerInstance="x")  # by name only: no warning
    assert "already exists with other settings" not in caplog.text
    await make_sink(
        endpoint=server.url, circuitBreakerInstance="x", circuitBreaker={"minimumNumberOfCalls": 99}
    )
    assert "circuit breaker instance `x` already exists with other settings" in caplog.text
