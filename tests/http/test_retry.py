"""Retries against scripted faults: bursts, Retry-After, client errors, refused connections, drops."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time

import pytest

from fluxion_flows.connectors.http import HttpStatusError, RetriesExhaustedError
from fluxion_flows.spi import Batch, NonRetryableError
from tests.http.conftest import MakeSink
from tests.support.http_server import Reply, ScriptedHttpServer, free_port, status_sequence


def docs(n: int, start: int = 0) -> list[dict[str, int]]:
    return [{"seq": i} for i in range(start, start + n)]


def logged_delays(text: str) -> list[float]:
    return [float(d) for d in re.findall(r"retry \d+/\d+ in ([0-9.]+)s", text)]


async def test_503_burst_without_retry_after_loses_nothing(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(endpoint=server.url, retry={"maxAttempts": 6, "waitDuration": "2ms"})
    for n in range(10):
        if n in (2, 6):
            server.script(*status_sequence(503, 503, 503, 503))
        await sink.write(Batch(docs(50, n * 50), {"p0": (n + 1) * 50}, key=f"k{n}"))

    assert server.documents() == docs(500)
    assert sink.metrics()["retries"] == 8
    assert sink.metrics()["status.503"] == 8


async def test_503_with_retry_after_seconds_waits_what_the_server_asked(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxion_flows")
    server.script(Reply(503, headers={"Retry-After": "1"}), Reply(503, headers={"Retry-After": "0"}))
    # waitDuration of a minute: only Retry-After can make this test finish.
    sink = await make_sink(endpoint=server.url, retry={"maxAttempts": 3, "waitDuration": "PT60S"})
    await sink.write(Batch(docs(10), key="k"))

    assert server.documents() == docs(10)
    assert logged_delays(caplog.text) == [1.0, 0.0]
    assert sink.metrics()["retry_after_honoured"] == 2


async def test_retry_after_http_date_is_honoured_and_capped_by_max_wait(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxion_flows")
    soon = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.script(Reply(503, headers={"Retry-After": soon}), Reply(429, headers={"Retry-After": "3600"}))
    sink = await make_sink(
        endpoint=server.url, retry={"maxAttempts": 3, "waitDuration": "60s", "maxWaitDuration": "300ms"}
    )
    await sink.write(Batch(docs(1), key="k"))

    assert logged_delays(caplog.text) == [0.3, 0.3]  # both capped by maxWaitDuration
    assert server.documents() == docs(1)


async def test_429_is_retried_honouring_retry_after(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxion_flows")
    when = email.utils.formatdate(time.time() + 1, usegmt=True)
    server.script(Reply(429, headers={"Retry-After": when}), Reply(429, body="slow down"))
    sink = await make_sink(
        endpoint=server.url, retry={"maxAttempts": 4, "waitDuration": "10ms", "multiplier": 1}
    )
    await sink.write(Batch(docs(5), key="k"))

    first, second = logged_delays(caplog.text)
    assert 0.0 <= first <= 1.0  # from the HTTP date (second resolution)
    assert 0.005 <= second <= 0.015  # no header: ordinary jittered backoff
    assert [r.status for r in server.requests] == [429, 429, 200]
    assert server.documents() == docs(5)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_not_retried_and_carry_status_and_body(
    server: ScriptedHttpServer, make_sink: MakeSink, status: int
) -> None:
    server.default = Reply(status, body={"error": "field `amount` must be positive", "pad": "x" * 2000})
    sink = await make_sink(endpoint=server.url + "/hook")
    with pytest.raises(HttpStatusError) as caught:
        await sink.write(Batch(docs(3), key="k"))

    error = caught.value
    assert isinstance(error, NonRetryableError)
    assert error.status == status
    assert "must be positive" in error.body_excerpt
    assert len(error.body_excerpt) < 600
    assert f"HTTP {status}" in str(error) and "must be positive" in str(error)
    assert error.details()["status"] == status
    assert len(server.requests) == 1


async def test_retry_on_and_ignore_change_what_is_retried(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.script(Reply(409))
    retry_409 = await make_sink(endpoint=server.url + "/a", retry={"retryOn": [409], "waitDuration": "1ms"})
    await retry_409.write(Batch(docs(1), key="k"))
    assert [r.status for r in server.received("/a")] == [409, 200]

    server.script(Reply(503))
    no_503 = await make_sink(endpoint=server.url + "/b", retry={"ignore": ["503"], "waitDuration": "1ms"})
    with pytest.raises(HttpStatusError):
        await no_503.write(Batch(docs(1), key="k"))
    assert len(server.received("/b")) == 1


async def test_exhausted_retries_raise_a_retryable_error_with_the_last_status(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.default = Reply(502, body="bad gateway upstream")
    sink = await make_sink(endpoint=server.url, retry={"maxAttempts": 3, "waitDuration": "1ms"})
    with pytest.raises(RetriesExhaustedError) as caught:
        await sink.write(Batch(docs(1), key="k"))
    assert not isinstance(caught.value, NonRetryableError)
    assert caught.value.attempts == 3
    assert caught.value.status == 502
    assert "bad gateway upstream" in caught.value.body_excerpt
    assert len(server.requests) == 3  # maxAttempts counts the first call
    assert sink.metrics()["retries_exhausted"] == 1


async def test_idempotency_key_is_stable_across_retries(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.script(Reply(503), Reply(500), Reply(drop=True))
    sink = await make_sink(endpoint=server.url)
    await sink.write(Batch(docs(2), {"orders-0": 42}, key="orders-0@42"))
    await sink.write(Batch(docs(2, 2), {"orders-0": 44}, key="orders-0@44"))

    keys = [r.header("idempotency-key") for r in server.requests]
    assert keys == ["orders-0@42"] * 4 + ["orders-0@44"]


async def test_idempotency_header_is_configurable_and_can_be_off(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    renamed = await make_sink(endpoint=server.url + "/a", idempotencyHeader="X-Request-Id")
    await renamed.write(Batch(docs(1), key="k1"))
    off = await make_sink(endpoint=server.url + "/b", idempotency=False)
    await off.write(Batch(docs(1), key="k1"))

    (a,) = server.received("/a")
    (b,) = server.received("/b")
    assert a.header("x-request-id") == "k1" and a.header("idempotency-key") is None
    assert b.header("idempotency-key") is None


async def test_idempotency_key_falls_back_to_positions_then_content(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(endpoint=server.url)
    await sink.write(Batch(docs(1), {"b": 2, "a": 1}))
    await sink.write(Batch(docs(1), {"a": 1, "b": 2}))
    await sink.write(Batch(docs(1)))
    await sink.write(Batch(docs(1)))
    await sink.write(Batch(docs(1, 1)))
    k = [r.header("idempotency-key") or "" for r in server.requests]
    assert k[0] == k[1] and k[0].startswith("pos-")
    assert k[2] == k[3] != k[4] and k[2].startswith("body-")


async def test_connection_refused_until_the_server_starts(make_sink: MakeSink) -> None:
    late = ScriptedHttpServer(port=free_port())
    sink = await make_sink(
        endpoint=late.url + "/late", retry={"maxAttempts": 200, "waitDuration": "20ms", "multiplier": 1}
    )
    write = asyncio.create_task(sink.write(Batch(docs(3), key="k")))
    try:
        await late.until(lambda: sink.metrics().get("error.ConnectError", 0) >= 2, what="refused attempts")
        assert not write.done()
        late.start()
        await asyncio.wait_for(write, timeout=30)
        assert late.documents("/late") == docs(3)
        assert late.requests[0].header("idempotency-key") == "k"
    finally:
        write.cancel()
        late.stop()


async def test_dropped_connection_is_retried(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    server.script(Reply(drop=True), Reply(drop=True))
    sink = await make_sink(endpoint=server.url)
    await sink.write(Batch(docs(4), key="k"))
    assert server.dropped == 2
    assert server.documents() == docs(4)


async def test_read_timeout_is_retried(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    server.script(Reply(200, delay=0.5))
    sink = await make_sink(endpoint=server.url, timeout={"read": "100ms"})
    await sink.write(Batch(docs(2), key="k"))
    assert sink.metrics()["error.ReadTimeout"] == 1
    assert [r.header("idempotency-key") for r in server.requests] == ["k", "k"]


async def test_named_retry_instance_is_shared(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    server.script(Reply(503), Reply(503))
    a = await make_sink(endpoint=server.url + "/a", retryInstance="shared", retry={"waitDuration": "1ms"})
    b = await make_sink(endpoint=server.url + "/b", retryInstance="shared", retry={"maxAttempts": 1})
    await a.write(Batch(docs(1), key="k"))
    await b.write(Batch(docs(1), key="k"))  # the shared instance keeps the first settings
    assert a._retry is b._retry
    assert a._retry.retries == 2
