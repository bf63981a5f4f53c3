"""Idempotency keys: the same batch gets the same key on every attempt and every replay.

The executor sets ``Batch.key`` from the source positions the batch covers,
which is exactly what makes a replay after a crash carry the key of the
original delivery. When a batch has no key (a sink driven directly, a source
without positions) the key falls back to a digest of the positions, then of
the request body, both of which are also stable across retries and replays.
"""

from __future__ import annotations

import hashlib

import orjson

from fluxion_flows.spi import Batch

DEFAULT_HEADER = "Idempotency-Key"


def batch_key(batch: Batch, body: bytes) -> str:
    """The idempotency key for a whole-batch request."""
    if batch.key:
        return batch.key
    if batch.positions:
        digest = hashlib.sha256(orjson.dumps(batch.positions, option=orjson.OPT_SORT_KEYS))
        return "pos-" + digest.hexdigest()[:32]
    return "body-" + hashlib.sha256(body).hexdigest()[:32]


def document_key(batch: Batch, index: int, body: bytes) -> str:
    """The key for document ``index`` of a batch sent one request per document (``format: single``)."""
    if batch.key or batch.positions:
        return f"{batch_key(batch, b'')}-{index}"
    return "body-" + hashlib.sha256(body).hexdigest()[:32]
