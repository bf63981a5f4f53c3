"""Helpers shared by the MongoDB source and sink: clients, BSON <-> JSON positions, option checks.

Positions and ``_meta`` must survive a JSON checkpoint store unchanged, but
resume tokens and ``_id`` values are BSON (``{"_data": ...}`` strings on
current servers, binary data on old ones, ObjectIds, typed numbers). Canonical
Extended JSON round-trips every BSON type exactly, so that is the one format
used for anything stored; the common ``{"_data": "<hex>"}`` token skips the
conversion because it is already plain JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import AsyncMongoClient
from pymongo.errors import ConfigurationError, ConnectionFailure, InvalidURI
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from fluxion_flows.errors import OptionError, PathPart
from fluxion_flows.spi import ConnectorConfig, ConnectorOption, OptionType, reveal

APP_NAME = "fluxion-flows"

CONNECTION_OPTION = ConnectorOption(
    "connectionString",
    OptionType.SECRET,
    required=True,
    description="MongoDB URI, e.g. mongodb://host:27017/?replicaSet=rs0 (kept secret: never logged)",
)
DATABASE_OPTION = ConnectorOption("database", OptionType.STRING, required=True, description="database name")
RECONNECT_OPTION = ConnectorOption(
    "reconnectTimeout",
    OptionType.DURATION,
    default="PT60S",
    description="how long to keep retrying while the server is unreachable (restart, failover) before "
    "the error reaches the error policy",
)

T = TypeVar("T")


def option_path(config: ConnectorConfig, *parts: PathPart) -> tuple[PathPart, ...]:
    """Where an option sits in the manifest, for error messages."""
    return (config.path, *parts) if config.path else parts


def scrub(message: str, secret: Any) -> str:
    """``message`` with the connection string (and its password) masked: driver errors may echo the URI."""
    plain = reveal(secret)
    if not isinstance(plain, str) or not plain:
        return message
    out = message.replace(plain, "***")
    if "@" in plain and "://" in plain:
        credentials = plain.split("://", 1)[1].split("@", 1)[0]
        for part in credentials.split(":"):
            if len(part) >= 3:
                out = out.replace(part, "***")
    return out


def _invalid_uri(config: ConnectorConfig, exc: Exception) -> OptionError:
    return OptionError(
        f"invalid value for option `connectionString`: {scrub(str(exc), config['connectionString'])}",
        path=option_path(config, "connectionString"),
        hint="expected a MongoDB URI such as mongodb://host:27017/",
    )


def check_connection_string(config: ConnectorConfig) -> None:
    """Reject a malformed ``mongodb://`` URI at creation (``mongodb+srv://`` needs DNS: checked at open)."""
    uri = reveal(config["connectionString"])
    if isinstance(uri, str) and uri.startswith("mongodb+srv://"):
        return
    try:
        parse_uri(uri)
    except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
        raise _invalid_uri(config, exc) from None


def make_client(config: ConnectorConfig, **options: Any) -> AsyncMongoClient[dict[str, Any]]:
    """An ``AsyncMongoClient`` for the block; a malformed URI is an OptionError that never shows the URI."""
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            reveal(config["connectionString"]), appname=APP_NAME, **options
        )
    except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
        raise _invalid_uri(config, exc) from None
    return client


def to_json(value: Any) -> Any:
    """A BSON value (resume token, ``_id``) as JSON-safe canonical Extended JSON."""
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("_data"), str):
        return {"_data": value["_data"]}
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def from_json(value: Any) -> Any:
    """The BSON value ``to_json`` produced, with its exact types restored."""
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get("_data"), str):
        return {"_data": value["_data"]}
    return json_util.loads(json.dumps(value), json_options=CANONICAL_JSON_OPTIONS)


def parse_write_concern(config: ConnectorConfig) -> WriteConcern | None:
    """``writeConcern`` as ``majority`` / a number / ``{w, j, wtimeout}``; None keeps the URI's default."""
    raw = config.get("writeConcern")
    if raw is None:
        return None
    where = option_path(config, "writeConcern")
    try:
        if isinstance(raw, bool):
            raise ValueError("a boolean is not a write concern")
        if isinstance(raw, int):
            return WriteConcern(w=raw)
        if isinstance(raw, str):
            text = raw.strip()
            return WriteConcern(w=int(text) if text.isdigit() else text)
        if isinstance(raw, Mapping):
            return _write_concern_from_map(raw)
        raise ValueError(f"unsupported value {raw!r}")
    except (ValueError, TypeError, ConfigurationError) as exc:
        raise OptionError(
            f"invalid value for option `writeConcern`: {exc}",
            path=where,
            hint='expected "majority", a node count, or a map like {w: majority, j: true, wtimeout: 5000}',
        ) from None


def _write_concern_from_map(raw: Mapping[str, Any]) -> WriteConcern:
    allowed = {"w", "j", "wtimeout", "wtimeoutMS", "fsync"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"unknown key `{unknown[0]}` (valid: {', '.join(sorted(allowed))})")
    w = raw.get("w")
    if isinstance(w, str) and w.isdigit():
        w = int(w)
    wtimeout = raw.get("wtimeout", raw.get("wtimeoutMS"))
    return WriteConcern(
        w=w,
        j=raw.get("j"),
        wtimeout=int(wtimeout) if wtimeout is not None else None,
        fsync=raw.get("fsync"),
    )


def key_fields(config: ConnectorConfig, name: str = "keyField") -> tuple[str, ...]:
    """``keyField`` as a tuple of (possibly dotted) field names; a list means a compound key."""
    raw = config.get(name, "_id")
    fields: Sequence[Any] = [raw] if isinstance(raw, str) else raw
    if not isinstance(fields, Sequence) or not fields or not all(isinstance(f, str) and f for f in fields):
        raise OptionError(
            f"invalid value for option `{name}`: expected a field name or a list of field names",
            path=option_path(config, name),
        )
    if len(set(fields)) != len(fields):
        raise OptionError(f"option `{name}` names a field twice", path=option_path(config, name))
    return tuple(fields)


async def retry_unreachable(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    budget: float,
    logger: logging.Logger,
    secret: Any,
    on_retry: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """``operation()``, retried with backoff while the server is unreachable, for up to ``budget`` seconds.

    PyMongo retries a read or a change stream once, and retries no write on a
    standalone server, so a server restart or a failover longer than one
    server-selection round surfaces as ``AutoReconnect`` (or its subclasses
    ``NetworkTimeout`` and ``ServerSelectionTimeoutError``, all
    ``ConnectionFailure``). Those say nothing about the data, so the run waits
    for the server instead of failing; ``on_retry`` drops state bound to the
    lost connection (a cursor, a change stream) before the next attempt.
    Other errors, and the last one once the budget is spent, propagate.
    """
    deadline = time.monotonic() + budget
    delay = 0.05
    while True:
        try:
            return await operation()
        except ConnectionFailure as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "%s: MongoDB unreachable (%s: %s); retrying in %.2fs",
                what,
                type(exc).__name__,
                scrub(str(exc), secret),
                delay,
            )
            if on_retry is not None:
                await on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
