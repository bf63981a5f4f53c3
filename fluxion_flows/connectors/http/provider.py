"""The ``http`` sink provider: option schema and validated settings.

Option names line up with an HTTP connection's config, because a
``connectionRef`` is resolved by the manifest layer and arrives merged into
these options: ``{type: http, endpoint, headers, timeout, retry, circuitBreaker}``.
``connectionRef``, ``connectionScope`` and ``fanout`` are accepted here only so
the schema documents them; the manifest layer consumes them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from fluxion_flows.connectors.http._settings import check, validate_map
from fluxion_flows.connectors.http.circuit_breaker import CircuitBreakerSettings
from fluxion_flows.connectors.http.idempotency import DEFAULT_HEADER
from fluxion_flows.connectors.http.retry import RetrySettings
from fluxion_flows.errors import OptionError, PathPart
from fluxion_flows.spi import (
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    Secret,
    SinkContext,
    SinkProvider,
    StreamingSink,
    parse_duration,
    reveal,
)

FORMATS = ("json-array", "ndjson", "single")
CONTENT_TYPES = {
    "json-array": "application/json",
    "ndjson": "application/x-ndjson",
    "single": "application/json",
}


@dataclass(frozen=True)
class HttpOptionSchema(OptionSchema):
    """The option schema, plus validation of the nested maps and cross-option rules.

    Running the full settings check inside ``validate`` makes every mistake
    surface when the registry configures the block (``fluxion validate``, with
    the manifest file and path), not later when the sink is created.
    """

    def validate(
        self, raw: Mapping[str, Any], *, file: str | None = None, path: Sequence[PathPart] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        values, extra = super().validate(raw, file=file, path=path)
        HttpSinkSettings.from_values(values, file=file, path=path)
        return values, extra


OPTIONS = HttpOptionSchema(
    options=[
        ConnectorOption("endpoint", aliases=("url", "baseUrl"), description="URL each batch is sent to"),
        ConnectorOption("path", description="appended to `endpoint` (e.g. a connection's base URL)"),
        ConnectorOption(
            "urlTemplate",
            description="URL with {field} / {a.b} placeholders filled from the batch's first document "
            "(from each document with format: single); relative templates are joined to `endpoint`",
        ),
        ConnectorOption("method", OptionType.ENUM, default="POST", choices=("POST", "PUT")),
        ConnectorOption("headers", OptionType.MAP, description="extra request headers (may be secrets)"),
        ConnectorOption(
            "auth", OptionType.ENUM, choices=("none", "bearer", "basic"), description="inferred when omitted"
        ),
        ConnectorOption("bearerToken", OptionType.SECRET, aliases=("token",), description="for auth: bearer"),
        ConnectorOption("username", description="for auth: basic"),
        ConnectorOption("password", OptionType.SECRET, description="for auth: basic"),
        ConnectorOption("format", OptionType.ENUM, default="json-array", choices=FORMATS),
        ConnectorOption("concurrency", OptionType.INT, default=8, description="in-flight requests (single)"),
        ConnectorOption(
            "timeout",
            OptionType.ANY,
            default=30.0,
            description="a duration for all phases, or {connect, read, write, pool}",
        ),
        ConnectorOption("compression", OptionType.ENUM, default="none", choices=("none", "gzip")),
        ConnectorOption("compressionLevel", OptionType.INT, default=5),
        ConnectorOption("http2", OptionType.BOOL, default=False, description="needs fluxion-flows[http2]"),
        ConnectorOption("maxConnections", OptionType.INT, default=100),
        ConnectorOption("maxKeepaliveConnections", OptionType.INT, default=20),
        ConnectorOption("keepaliveExpiry", OptionType.DURATION, default=5.0),
        ConnectorOption("verifyTls", OptionType.BOOL, default=True, aliases=("tlsVerify",)),
        ConnectorOption("allowEmpty", OptionType.BOOL, default=False, description="send empty batches"),
        ConnectorOption("retry", OptionType.MAP, description="maxAttempts, waitDuration, multiplier, ..."),
        ConnectorOption("retryInstance", description="named retry shared per process"),
        ConnectorOption("circuitBreaker", OptionType.MAP, description="failureRateThreshold, ..."),
        ConnectorOption("circuitBreakerInstance", description="named circuit breaker shared per process"),
        ConnectorOption("idempotency", OptionType.BOOL, default=True, description="send an idempotency key"),
        ConnectorOption("idempotencyHeader", default=DEFAULT_HEADER),
        ConnectorOption("connectionRef", description="resolved by the manifest layer"),
        ConnectorOption("connectionScope", OptionType.ANY, description="resolved by the manifest layer"),
        ConnectorOption("fanout", OptionType.ANY, description="handled by the manifest layer"),
    ]
)

TIMEOUT_SCHEMA = OptionSchema(
    options=[
        ConnectorOption("connect", OptionType.DURATION, default=10.0),
        ConnectorOption("read", OptionType.DURATION, default=30.0),
        ConnectorOption("write", OptionType.DURATION, default=30.0),
        ConnectorOption("pool", OptionType.DURATION, default=30.0),
    ]
)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 30.0


@dataclass(frozen=True)
class HttpSinkSettings:
    """Everything the sink needs, validated; secrets still wrapped."""

    endpoint: str | None = field(repr=False)
    url_template: str | None = field(repr=False)
    method: str = "POST"
    headers: Mapping[str, Any] = field(default_factory=dict)
    authorization: Secret | None = None
    format: str = "json-array"
    concurrency: int = 8
    timeouts: Timeouts = field(default_factory=Timeouts)
    gzip: bool = False
    gzip_level: int = 5
    http2: bool = False
    max_connections: int = 100
    max_keepalive: int = 20
    keepalive_expiry: float = 5.0
    verify_tls: bool = True
    allow_empty: bool = False
    retry: RetrySettings = field(default_factory=RetrySettings)
    retry_instance: str | None = None
    circuit_breaker: CircuitBreakerSettings | None = None
    circuit_breaker_instance: str | None = None
    idempotency_header: str | None = DEFAULT_HEADER
    retry_explicit: bool = False
    """``retry`` was given inline (so a differing named instance deserves a warning)."""
    circuit_breaker_explicit: bool = False
    secret_url: bool = False
    """The endpoint or template was a secret: never show more than scheme and host."""

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> HttpSinkSettings:
        return cls.from_values(config.values, path=(config.path,) if config.path else ())

    @classmethod
    def from_values(
        cls, v: Mapping[str, Any], *, file: str | None = None, path: Sequence[PathPart] = ()
    ) -> HttpSinkSettings:
        """Settings from typed option values; an OptionError names the file and the (nested) key."""
        try:
            return cls._build(v, tuple(path))
        except OptionError as exc:
            raise exc.at(file=file) from None

    @classmethod
    def _build(cls, v: Mapping[str, Any], where: tuple[PathPart, ...]) -> HttpSinkSettings:
        endpoint, userinfo = _endpoint(reveal(v.get("endpoint")), v.get("path"), where)
        template = reveal(v.get("urlTemplate"))
        secret_url = isinstance(v.get("endpoint"), Secret) or isinstance(v.get("urlTemplate"), Secret)
        if endpoint is None and not template:
            raise OptionError(
                "the http sink needs `endpoint` or `urlTemplate` (or a `connectionRef` providing one)",
                path=(*where, "endpoint"),
            )
        if template and "://" in template:
            _check_url(template.split("{", 1)[0] or template, (*where, "urlTemplate"))
        elif template and endpoint is None:
            raise OptionError(
                "a relative `urlTemplate` needs `endpoint` as its base URL", path=(*where, "urlTemplate")
            )
        check(v["concurrency"] >= 1, "`concurrency` must be at least 1", (*where, "concurrency"))
        level_path = (*where, "compressionLevel")
        check(0 <= v["compressionLevel"] <= 9, "`compressionLevel` must be 0-9", level_path)
        header_name = v["idempotencyHeader"] if v["idempotency"] else None
        return cls(
            endpoint=endpoint,
            url_template=template,
            method=v["method"],
            headers=_headers(v.get("headers") or {}, where),
            authorization=_authorization(v, where) or userinfo,
            format=v["format"],
            concurrency=v["concurrency"],
            timeouts=_timeouts(v["timeout"], (*where, "timeout")),
            gzip=v["compression"] == "gzip",
            gzip_level=v["compressionLevel"],
            http2=v["http2"],
            max_connections=v["maxConnections"],
            max_keepalive=v["maxKeepaliveConnections"],
            keepalive_expiry=v["keepaliveExpiry"],
            verify_tls=v["verifyTls"],
            allow_empty=v["allowEmpty"],
            retry=RetrySettings.from_map(v.get("retry") or {}, (*where, "retry")),
            retry_instance=v.get("retryInstance"),
            circuit_breaker=_breaker(v, where),
            circuit_breaker_instance=v.get("circuitBreakerInstance"),
            idempotency_header=header_name or None,
            secret_url=secret_url,
            retry_explicit=v.get("retry") is not None,
            circuit_breaker_explicit=v.get("circuitBreaker") is not None,
        )


def _check_url(url: str, path: tuple[PathPart, ...]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OptionError(
            "expected an absolute http:// or https:// URL", path=path, found=parts.scheme or None, valid=None
        )


def _endpoint(
    endpoint: str | None, path: str | None, where: tuple[PathPart, ...]
) -> tuple[str | None, Secret | None]:
    """The endpoint joined with ``path``, and user info moved out of it into a Basic credential.

    Credentials left inside the URL would reach httpx's own request log line.
    """
    if not endpoint:
        return None, None
    _check_url(endpoint, (*where, "endpoint"))
    parts = urlsplit(endpoint)
    credential = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        credential = Secret("Basic " + base64.b64encode(pair).decode("ascii"))
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{parts.port}" if parts.port else ""
        endpoint = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    if path:
        endpoint = endpoint.rstrip("/") + "/" + path.lstrip("/")
    return endpoint, credential


def _headers(raw: Mapping[str, Any], where: tuple[PathPart, ...]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(value, str | Secret | int | float) or isinstance(value, bool):
            raise OptionError(
                "a header value must be a string (or a secret)", path=(*where, "headers", str(name))
            )
        headers[str(name)] = value if isinstance(value, Secret) else str(value)
    return headers


def _authorization(v: Mapping[str, Any], where: tuple[PathPart, ...]) -> Secret | None:
    """The Authorization header value, built from secrets and kept wrapped until the client is built."""
    kind = v.get("auth") or ("bearer" if v.get("bearerToken") else "basic" if v.get("username") else "none")
    if kind == "bearer":
        token = v.get("bearerToken")
        if not token:
            raise OptionError("auth: bearer needs `bearerToken`", path=(*where, "bearerToken"))
        return Secret("Bearer " + token.reveal())
    if kind == "basic":
        user, password = v.get("username"), v.get("password")
        if not user:
            raise OptionError("auth: basic needs `username`", path=(*where, "username"))
        pair = f"{user}:{password.reveal() if password else ''}".encode()
        return Secret("Basic " + base64.b64encode(pair).decode("ascii"))
    return None


def _timeouts(raw: Any, path: tuple[PathPart, ...]) -> Timeouts:
    if isinstance(raw, Mapping):
        v = validate_map(TIMEOUT_SCHEMA, raw, path)
        return Timeouts(connect=v["connect"], read=v["read"], write=v["write"], pool=v["pool"])
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise OptionError(
            f"invalid value for option `timeout`: {exc}, or a map of connect/read/write/pool", path=path
        ) from None
    return Timeouts(connect=seconds, read=seconds, write=seconds, pool=seconds)


def _breaker(v: Mapping[str, Any], where: tuple[PathPart, ...]) -> CircuitBreakerSettings | None:
    """Breaker settings, or None: the breaker is on only when configured (inline or as a named instance)."""
    raw = v.get("circuitBreaker")
    if raw is None and not v.get("circuitBreakerInstance"):
        return None
    return CircuitBreakerSettings.from_map(raw or {}, (*where, "circuitBreaker"))


class HttpSinkProvider(SinkProvider):
    """Entry point ``http`` in group ``fluxion_flows.sinks``."""

    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            type="http",
            display_name="HTTP",
            description="Delivers each batch to an HTTP endpoint (JSON array, NDJSON or one request per "
            "document) with retries, a circuit breaker and idempotency keys.",
        )

    def options(self) -> OptionSchema:
        return OPTIONS

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        from fluxion_flows.connectors.http.sink import HttpSink

        return HttpSink(context, HttpSinkSettings.from_config(config))
