"""JSON encoding of stage state for checkpoints.

Stage state holds arbitrary document values (dates, decimals, binary, NaN),
while the checkpoint is JSON. Values are encoded in a small tagged form
(``{"$date": "..."}`` and friends, the Extended JSON spirit); objects whose
keys could be mistaken for tags are wrapped, so every value round-trips.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from decimal import Decimal
from typing import Any

from fluxion_flows.stages.values import MISSING, UTC

_TAGS = ("$date", "$numberDecimal", "$binary", "$double", "$doc", "$missing", "$oid")


def encode(value: Any) -> Any:
    """A JSON-serialisable form of any document value."""
    cls = value.__class__
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return value if math.isfinite(value) else {"$double": repr(value)}
    if isinstance(value, dict):
        if any(isinstance(k, str) and k.startswith("$") for k in value):
            return {"$doc": [[k, encode(v)] for k, v in value.items()]}
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {"$date": aware.astimezone(UTC).isoformat()}
    if isinstance(value, Decimal):
        return {"$numberDecimal": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": base64.b64encode(bytes(value)).decode()}
    if value is MISSING:
        return {"$missing": 1}
    if cls.__name__ == "ObjectId":
        return {"$oid": str(value)}
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"cannot checkpoint a value of type {cls.__name__}")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        tag, inner = next(iter(value.items()))
        if tag == "$date":
            return dt.datetime.fromisoformat(inner)
        if tag == "$numberDecimal":
            return Decimal(inner)
        if tag == "$binary":
            return base64.b64decode(inner)
        if tag == "$double":
            return float(inner)
        if tag == "$doc":
            return {k: decode(v) for k, v in inner}
        if tag == "$missing":
            return MISSING
        if tag == "$oid":
            from bson import ObjectId  # pymongo's bson; only needed if ObjectIds were stored

            return ObjectId(inner)
    return {k: decode(v) for k, v in value.items()}
