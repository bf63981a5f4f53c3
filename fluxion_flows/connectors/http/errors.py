"""Errors the HTTP sink raises, shaped for the executor's error policy.

Two families matter to the executor: :class:`HttpStatusError` is a
:class:`~fluxion_flows.spi.NonRetryableError` (another attempt cannot fix a
400), so the batch goes straight to the policy's fallback, usually a dead
letter; :class:`RetriesExhaustedError` and :class:`CircuitOpenError` are plain
exceptions, so the executor's own retry policy and backpressure apply. Each
carries ``details()`` so a dead-letter envelope can show the status and the
response body excerpt without parsing the message.
"""

from __future__ import annotations

from typing import Any

from fluxion_flows.spi import NonRetryableError
from fluxion_flows.spi.sink import RetryLater

EXCERPT_LIMIT = 512


def excerpt(body: bytes, limit: int = EXCERPT_LIMIT) -> str:
    """The start of a response body as text, short enough for a log line or an envelope."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."


class HttpStatusError(NonRetryableError):
    """The endpoint answered with a status that retrying cannot fix (e.g. 400, 404, 422)."""

    def __init__(self, status: int, reason: str, method: str, url: str, body_excerpt: str) -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.url = url
        self.body_excerpt = body_excerpt
        super().__init__(f"HTTP {status} {reason} from {method} {url}: {body_excerpt}".rstrip(": "))

    def details(self) -> dict[str, Any]:
        return {"status": self.status, "url": self.url, "method": self.method, "body": self.body_excerpt}


class UrlTemplateError(NonRetryableError):
    """A document lacks a field the ``urlTemplate`` needs; resending the same document cannot help."""

    def details(self) -> dict[str, Any]:
        return {"reason": str(self)}


class RetriesExhaustedError(Exception):
    """Every attempt the retry settings allow failed with a retryable outcome.

    Deliberately retryable for the executor: the endpoint was unhealthy, not
    the batch wrong, so the executor's policy may try again later.
    """

    def __init__(
        self,
        attempts: int,
        last: str,
        *,
        status: int | None = None,
        body_excerpt: str = "",
        url: str = "",
    ) -> None:
        self.attempts = attempts
        self.status = status
        self.body_excerpt = body_excerpt
        self.url = url
        super().__init__(f"gave up after {attempts} attempt(s): {last}")

    def details(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "status": self.status, "url": self.url, "body": self.body_excerpt}


class CircuitOpenError(RetryLater):
    """The circuit breaker is open: the endpoint was not called.

    Retryable: the executor backs off (and backpressure holds the source)
    until the breaker lets a trial call through again.
    """

    def __init__(self, name: str, retry_in: float) -> None:
        self.name = name
        super().__init__(
            f"circuit breaker `{name}` is open; endpoint not called (next trial in {retry_in:.2f}s)", retry_in
        )

    def details(self) -> dict[str, Any]:
        return {"circuitBreaker": self.name, "retryIn": self.retry_in}
