"""The HTTP sink runtime: one request per batch (or per document), retried and guarded.

``write`` returns only when the endpoint answered 2xx, so the executor can
checkpoint after it. Each attempt passes the circuit breaker first; the
retry loop wraps the breaker (Resilience4j's usual order), so every attempt
counts towards the failure rate and an open breaker stops the retries at
once with a retryable :class:`CircuitOpenError`.

Secrets: the Authorization header and secret header values are revealed only
into the httpx client's default headers; nothing here logs headers, and URLs
are logged with user info and query strings masked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from fluxion_flows.connectors.http.circuit_breaker import CircuitBreaker, State, circuit_breaker_instance
from fluxion_flows.connectors.http.errors import (
    HttpStatusError,
    RetriesExhaustedError,
    UrlTemplateError,
    excerpt,
)
from fluxion_flows.connectors.http.idempotency import batch_key, document_key
from fluxion_flows.connectors.http.metrics import HttpSinkMetrics
from fluxion_flows.connectors.http.provider import HttpSinkSettings
from fluxion_flows.connectors.http.redaction import protect
from fluxion_flows.connectors.http.retry import Retry, retry_instance
from fluxion_flows.connectors.http.template import UrlTemplate
from fluxion_flows.errors import ProviderError
from fluxion_flows.spi import Batch, Document, NonRetryableError, Secret, SinkContext, StreamingSink, reveal
from fluxion_flows.spi.secret import MASK


def safe_url(url: str, *, secret: bool = False) -> str:
    """The URL without user info and with the query masked (and the path too if the URL is a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if secret:
        return urlunsplit((parts.scheme, host, "/***", "", ""))
    return urlunsplit((parts.scheme, host, parts.path, "..." if parts.query else "", ""))


def _json_default(value: Any) -> Any:
    """Fallback for types orjson does not know (Decimal, ObjectId, bytes, sets): their text form."""
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default)


class HttpSink(StreamingSink):
    def __init__(self, context: SinkContext, settings: HttpSinkSettings) -> None:
        self.context = context
        self.settings = settings
        self._log = context.logger
        self._name = context.path or f"{context.pipeline_id}.http"
        self._metrics = HttpSinkMetrics()
        self._secret_texts: tuple[str, ...] = ()
        self._retry: Retry = retry_instance(settings.retry_instance, settings.retry)
        self._breaker: CircuitBreaker | None = None
        if settings.circuit_breaker is not None:
            self._breaker = circuit_breaker_instance(
                settings.circuit_breaker_instance, settings.circuit_breaker
            )
            self._breaker.add_listener(self._on_transition)
        self._warn_if_shared_differs()
        self._template = (
            UrlTemplate(settings.url_template, settings.endpoint) if settings.url_template else None
        )
        if settings.secret_url:
            for text in (settings.endpoint, settings.url_template):
                if text:
                    protect(text.split("{", 1)[0])
        self._client: httpx.AsyncClient | None = None
        self._semaphore = asyncio.Semaphore(settings.concurrency)

    def _shown(self, url: str) -> str:
        return safe_url(url, secret=self.settings.secret_url)

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        if s.http2:
            try:
                import h2  # noqa: F401
            except ImportError:
                raise ProviderError(
                    "the http sink option `http2: true` needs the h2 package",
                    hint="install it with: pip install 'fluxion-flows[http2]'",
                ) from None
        headers = {name: reveal(value) for name, value in s.headers.items()}
        self._secret_texts = _secret_texts(s)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = s.content_type
        if s.gzip:
            headers["Content-Encoding"] = "gzip"
        if s.authorization is not None:
            headers["Authorization"] = s.authorization.reveal()
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(
                connect=s.timeouts.connect, read=s.timeouts.read, write=s.timeouts.write, pool=s.timeouts.pool
            ),
            limits=httpx.Limits(
                max_connections=s.max_connections,
                max_keepalive_connections=s.max_keepalive,
                keepalive_expiry=s.keepalive_expiry,
            ),
            http2=s.http2,
            verify=s.verify_tls,
            follow_redirects=False,
        )

    async def close(self) -> None:
        if self._breaker is not None:
            self._breaker.remove_listener(self._on_transition)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def metrics(self) -> dict[str, float]:
        out = self._metrics.snapshot()
        if self._breaker is not None:
            out.update(self._breaker.snapshot())
        return out

    # ------------------------------------------------------------------- writing

    async def write(self, batch: Batch) -> None:
        if not batch and not self.settings.allow_empty:
            self._metrics.empty_batches_skipped += 1
            return
        if self._client is None:
            await self.open()
        if self.settings.format == "single":
            await self._write_each(batch)
            return
        if self.settings.format == "ndjson":
            body = b"".join(_dumps(doc) + b"\n" for doc in batch)
        else:
            body = _dumps(batch)
        url = self._url(batch[0] if batch else None)
        await self._send(url, self._encode(body), batch_key(batch, body), len(batch))

    async def _write_each(self, batch: Batch) -> None:
        """One request per document, at most ``concurrency`` in flight; all finish before raising."""

        async def one(index: int, doc: Document) -> None:
            async with self._semaphore:
                body = _dumps(doc)
                await self._send(self._url(doc), self._encode(body), document_key(batch, index, body), 1)

        results = await asyncio.gather(*(one(i, d) for i, d in enumerate(batch)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            return
        for error in errors:
            if not isinstance(error, Exception):
                raise error
        permanent = [e for e in errors if isinstance(e, NonRetryableError)]
        raise (permanent or errors)[0]

    def _url(self, doc: Document | None) -> str:
        if self._template is None:
            assert self.settings.endpoint is not None
            return self.settings.endpoint
        if doc is None:
            raise UrlTemplateError("an empty batch has no document to fill `urlTemplate` from")
        return self._template.render(doc)

    def _encode(self, body: bytes) -> bytes:
        if self.settings.gzip:
            return gzip.compress(body, compresslevel=self.settings.gzip_level, mtime=0)
        return body

    async def _send(self, url: str, body: bytes, key: str, documents: int) -> None:
        """POST/PUT one body until it is accepted, retries and the breaker permitting."""
        assert self._client is not None
        headers = {self.settings.idempotency_header: key} if self.settings.idempotency_header else None
        attempts = self.settings.retry.max_attempts
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(url, body, headers)
            if isinstance(outcome, httpx.Response):
                status = outcome.status_code
                if 200 <= status < 300:
                    self._metrics.documents += documents
                    return
                if not self._retry.status_retryable(status):
                    self._metrics.non_retryable += 1
                    method, reason = self.settings.method, outcome.reason_phrase
                    raise HttpStatusError(status, reason, method, self._shown(url), self._excerpt(outcome))
                what = f"HTTP {status}"
                wait = self._retry.retry_after(status, outcome.headers.get("Retry-After"))
                if wait is not None:
                    self._metrics.retry_after_honoured += 1
            else:
                if not self._retry.exception_retryable(outcome):
                    raise outcome
                what, wait = f"{type(outcome).__name__}: {outcome}", None
            if attempt >= attempts:
                raise self._exhausted(attempt, what, url, outcome)
            delay = self._retry.backoff(attempt) if wait is None else wait
            self._metrics.retries += 1
            self._retry.retries += 1
            self._log.warning(
                "http sink %s: %s %s failed (%s); retry %d/%d in %.2fs",
                self._name,
                self.settings.method,
                self._shown(url),
                what,
                attempt,
                attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)

    def _excerpt(self, response: httpx.Response) -> str:
        """The start of the response body, with our own credentials masked (some servers echo them)."""
        text = excerpt(response.content)
        for secret in self._secret_texts:
            text = text.replace(secret, MASK)
        return text

    def _exhausted(self, attempt: int, what: str, url: str, outcome: httpx.Response | Exception) -> Exception:
        self._metrics.exhausted += 1
        self._retry.exhausted += 1
        if isinstance(outcome, httpx.Response):
            status, body = outcome.status_code, self._excerpt(outcome)
            error = RetriesExhaustedError(
                attempt, what, status=status, body_excerpt=body, url=self._shown(url)
            )
        else:
            error = RetriesExhaustedError(attempt, what, url=self._shown(url))
            error.__cause__ = outcome
        return error

    async def _attempt(
        self, url: str, body: bytes, headers: dict[str, str] | None
    ) -> httpx.Response | Exception:
        """One call through the breaker: the response, or the transport exception it raised."""
        assert self._client is not None
        token = self._admit()
        started = time.perf_counter()
        try:
            response = await self._client.request(self.settings.method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            elapsed = time.perf_counter() - started
            self._metrics.record_exception(exc, elapsed * 1000.0)
            self._metrics.bytes += len(body)
            self._record(token, failed=True, duration=elapsed)
            return exc
        except BaseException:
            if self._breaker is not None:
                self._breaker.release(token)
            raise
        elapsed = time.perf_counter() - started
        self._metrics.record_response(response.status_code, elapsed * 1000.0)
        self._metrics.bytes += len(body)
        status = response.status_code
        self._record(token, failed=status >= 500 or self._retry.status_retryable(status), duration=elapsed)
        return response

    def _admit(self) -> int:
        if self._breaker is None:
            return -1
        try:
            return self._breaker.acquire()
        except Exception:
            self._metrics.circuit_rejections += 1
            raise

    def _record(self, token: int, *, failed: bool, duration: float) -> None:
        if self._breaker is not None:
            self._breaker.record(token, failed=failed, duration=duration)

    # ------------------------------------------------------------------ breaker

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        log: Callable[..., None] = self._log.warning if new is not State.CLOSED else self._log.info
        log("http sink %s: circuit breaker `%s` %s -> %s", self._name, breaker.name, old.name, new.name)

    def _warn_if_shared_differs(self) -> None:
        """A named instance keeps the settings it was created with; say so when this sink asked for others."""
        s = self.settings
        if (
            self._breaker is not None
            and s.circuit_breaker_explicit
            and self._breaker.settings != s.circuit_breaker
        ):
            self._log.warning(
                "http sink %s: circuit breaker instance `%s` already exists with other settings; "
                "the existing settings apply",
                self._name,
                self._breaker.name,
            )
        if s.retry_instance and s.retry_explicit and self._retry.settings != s.retry:
            self._log.warning(
                "http sink %s: retry instance `%s` already exists with other settings; "
                "the existing settings apply",
                self._name,
                s.retry_instance,
            )


__all__ = ["HttpSink", "safe_url"]


def _secret_texts(settings: HttpSinkSettings) -> tuple[str, ...]:
    """Every credential string this sink sends, longest first, in every form a server might echo."""
    texts = {reveal(value) for value in settings.headers.values() if isinstance(value, Secret)}
    if settings.authorization is not None:
        header = settings.authorization.reveal()
        scheme, _, credential = header.partition(" ")
        texts |= {header, credential}
        if scheme == "Basic":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user_password = base64.b64decode(credential).decode()
                texts |= {user_password, user_password.partition(":")[2]}
    return tuple(sorted((t for t in texts if len(t) >= 4), key=len, reverse=True))
