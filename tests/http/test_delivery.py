"""The HTTP sink delivers batches to a real loopback server in every format."""

from __future__ import annotations

import base64
import logging

import pytest

from fluxion_flows.connectors.http import HttpStatusError, UrlTemplateError
from fluxion_flows.spi import Batch, NonRetryableError, Secret
from tests.http.conftest import MakeSink
from tests.support.http_server import Reply, ScriptedHttpServer


def docs(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"id": i, "name": f"doc-{i}", "nested": {"v": i * 1.5}} for i in range(start, start + n)]


async def test_json_array_is_one_post_per_batch(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    sink = await make_sink(endpoint=server.url + "/orders")
    await sink.write(Batch(docs(3), {"p0": 3}, key="b1"))
    await sink.write(Batch(docs(2, 3), {"p0": 5}, key="b2"))

    requests = server.received("/orders")
    assert [r.method for r in requests] == ["POST", "POST"]
    assert requests[0].header("content-type") == "application/json"
    assert requests[0].json() == docs(3)
    assert server.documents() == docs(5)
    assert sink.metrics()["documents"] == 5
    assert sink.metrics()["status.200"] == 2


async def test_ndjson_puts_one_document_per_line(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    sink = await make_sink(endpoint=server.url, path="/bulk", format="ndjson", method="PUT")
    await sink.write(Batch(docs(4), key="b1"))

    (request,) = server.received("/bulk")
    assert request.method == "PUT"
    assert request.header("content-type") == "application/x-ndjson"
    assert request.body.count(b"\n") == 4
    assert request.ndjson() == docs(4)


async def test_single_sends_one_request_per_document_within_the_concurrency_bound(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.default = Reply(200, delay=0.02)
    sink = await make_sink(endpoint=server.url + "/one", format="single", concurrency=3)
    await sink.write(Batch(docs(12), key="b1"))

    requests = server.received("/one")
    assert sorted(r.json()["id"] for r in requests) == list(range(12))
    assert 1 < server.max_in_flight <= 3
    keys = {r.header("idempotency-key") for r in requests}
    assert keys == {f"b1-{i}" for i in range(12)}


async def test_url_template_renders_from_first_document_per_batch(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(urlTemplate=server.url + "/tenants/{tenant}/orders/{meta.kind}")
    await sink.write(Batch([{"tenant": "a b/c", "meta": {"kind": "x"}}, {"tenant": "other"}], key="b"))

    (request,) = server.requests
    assert request.raw_path == "/tenants/a%20b%2Fc/orders/x"
    assert len(request.json()) == 2


async def test_url_template_in_single_mode_is_per_document_and_relative_to_endpoint(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(endpoint=server.url + "/api", urlTemplate="items/{id}", format="single")
    await sink.write(Batch(docs(3), key="b"))
    assert sorted(r.path for r in server.requests) == ["/api/items/0", "/api/items/1", "/api/items/2"]


async def test_url_template_missing_field_is_not_retryable(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    sink = await make_sink(urlTemplate=server.url + "/{customer}")
    with pytest.raises(UrlTemplateError, match="customer") as caught:
        await sink.write(Batch([{"id": 1}], key="b"))
    assert isinstance(caught.value, NonRetryableError)
    assert server.requests == []


async def test_gzip_compresses_request_bodies(server: ScriptedHttpServer, make_sink: MakeSink) -> None:
    sink = await make_sink(endpoint=server.url + "/gz", compression="gzip", format="ndjson")
    batch = docs(200)
    await sink.write(Batch(batch, key="b"))

    (request,) = server.requests
    assert request.header("content-encoding") == "gzip"
    assert request.raw_body[:2] == b"\x1f\x8b"
    assert len(request.raw_body) < len(request.body)
    assert request.ndjson() == batch
    assert sink.metrics()["bytes"] == len(request.raw_body)


async def test_bearer_auth_header_and_no_secret_in_logs(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "tok-7f3a9c-very-secret"
    server.script(Reply(503), Reply(400, body="rejected"))
    sink = await make_sink(
        endpoint=server.url + "/auth", bearerToken=token, headers={"X-Api-Key": "k-42-hidden"}
    )
    with pytest.raises(HttpStatusError) as caught:
        await sink.write(Batch(docs(1), key="b"))
    await sink.write(Batch(docs(1), key="c"))

    assert all(r.header("authorization") == f"Bearer {token}" for r in server.requests)
    assert all(r.header("x-api-key") == "k-42-hidden" for r in server.requests)
    assert "retry 1/" in caplog.text  # the retry really was logged
    exposed = [caplog.text, str(caught.value), repr(sink.settings), str(sink.metrics())]
    for text in exposed:
        assert token not in text


async def test_basic_auth_header_and_no_password_in_logs(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Reply(502))
    sink = await make_sink(endpoint=server.url, auth="basic", username="svc", password="pw-Zq81-secret")
    await sink.write(Batch(docs(1), key="b"))

    expected = "Basic " + base64.b64encode(b"svc:pw-Zq81-secret").decode()
    assert [r.header("authorization") for r in server.requests] == [expected, expected]
    assert "pw-Zq81-secret" not in caplog.text
    assert base64.b64encode(b"svc:pw-Zq81-secret").decode() not in caplog.text
    assert "pw-Zq81-secret" not in repr(sink.settings)


async def test_credentials_in_the_endpoint_become_basic_auth_and_stay_out_of_logs(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Reply(503))
    sink = await make_sink(endpoint=server.url.replace("http://", "http://svc:p%40ss-Q9z@") + "/in")
    await sink.write(Batch(docs(1), key="b"))

    expected = "Basic " + base64.b64encode(b"svc:p@ss-Q9z").decode()
    assert [r.header("authorization") for r in server.requests] == [expected, expected]
    assert "HTTP Request: POST" in caplog.text  # httpx's own request log is captured...
    assert "Q9z" not in caplog.text  # ...and holds no password
    assert "Q9z" not in repr(sink.settings)


async def test_a_secret_endpoint_is_masked_everywhere(
    server: ScriptedHttpServer, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(Reply(502))
    server.default = Reply(410, body="gone")
    hook = server.url + "/services/T0001/B0002/xoxb-hook-secret"
    sink = await make_sink(endpoint=Secret(hook))
    with pytest.raises(HttpStatusError) as caught:
        await sink.write(Batch(docs(1), key="b"))

    assert server.requests[0].path == "/services/T0001/B0002/xoxb-hook-secret"
    assert "HTTP Request: POST" in caplog.text
    for text in (caplog.text, str(caught.value), repr(sink.settings)):
        assert "xoxb-hook-secret" not in text


async def test_user_info_and_query_are_masked_in_errors(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.default = Reply(404, body="no such hook")
    url = server.url.replace("http://", "http://user:hunter2@") + "/hook?api_key=abc123"
    sink = await make_sink(endpoint=url)
    with pytest.raises(HttpStatusError) as caught:
        await sink.write(Batch(docs(1), key="b"))
    assert "hunter2" not in str(caught.value)
    assert "abc123" not in str(caught.value)
    assert caught.value.status == 404


async def test_empty_batches_are_skipped_unless_allowed(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    skipping = await make_sink(endpoint=server.url + "/skip")
    await skipping.write(Batch([], {"p0": 1}, key="e1"))
    assert server.requests == []
    assert skipping.metrics()["empty_batches_skipped"] == 1

    sending = await make_sink(endpoint=server.url + "/send", allowEmpty=True)
    await sending.write(Batch([], {"p0": 1}, key="e1"))
    (request,) = server.requests
    assert request.json() == []
    assert request.header("idempotency-key") == "e1"


async def test_http2_opt_in_still_delivers_over_cleartext(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    # httpx negotiates HTTP/2 through TLS ALPN; over http:// it falls back to HTTP/1.1.
    sink = await make_sink(endpoint=server.url + "/h2", http2=True)
    await sink.write(Batch(docs(2), key="b"))
    assert server.documents("/h2") == docs(2)


async def test_documents_with_non_json_types_are_serialised(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    import datetime
    import decimal

    sink = await make_sink(endpoint=server.url)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    await sink.write(
        Batch([{"at": when, "amount": decimal.Decimal("1.10"), "raw": b"xy", "tags": {"a"}}], key="b")
    )
    assert server.documents() == [
        {"at": "2026-01-02T03:04:05+00:00", "amount": "1.10", "raw": "xy", "tags": ["a"]}
    ]


async def test_metrics_count_requests_statuses_bytes_and_latency(
    server: ScriptedHttpServer, make_sink: MakeSink
) -> None:
    server.script(Reply(500), Reply(503))
    sink = await make_sink(endpoint=server.url)
    await sink.write(Batch(docs(3), key="b"))
    await sink.write(Batch(docs(2), key="c"))

    m = sink.metrics()
    assert m["requests"] == 4
    assert m["requests_failed"] == 2
    assert (m["status.500"], m["status.503"], m["status.200"]) == (1, 1, 2)
    assert m["retries"] == 2
    assert m["documents"] == 5
    assert m["bytes"] == sum(len(r.raw_body) for r in server.requests)
    assert m["latency_ms.count"] == 4
    assert m["latency_ms.le_inf"] == 4
