"""Ownership stores for the SDK's load balancer, chosen by the source's ``ownershipStore`` URL.

| URL | store | sharing |
|---|---|---|
| ``memory`` (default) | in this process | none: this run owns every partition |
| ``file:///dir`` or ``file:dir`` | JSON files under a ``flock`` | runs on one machine |
| ``postgresql://user@host:5432/db`` | two tables, conditional UPDATE | runs anywhere |
| ``redis://host:6379/0`` | two hashes, a Lua compare-and-swap | runs anywhere |

The PostgreSQL and Redis drivers (``asyncpg``, ``redis``) are imported only
when their store is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlparse

from fluxion_connect_eventhub.ownership.base import (
    Group,
    OwnershipStore,
    checkpoint_record,
    new_etag,
    ownership_record,
)

SCHEMES = ("memory", "file", "postgresql", "postgres", "redis", "rediss")
DEFAULT_FILE_DIRECTORY = ".fluxion/eventhub-ownership"


class MemoryOwnershipStore(OwnershipStore):
    """Claims and checkpoints in this process only: one run owns all partitions, nothing is shared."""

    kind = "memory"

    def __init__(self, scope: str = "") -> None:
        super().__init__(scope)
        self._ownership: dict[tuple[Group, str], dict[str, Any]] = {}
        self._checkpoints: dict[tuple[Group, str], dict[str, Any]] = {}

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        return [dict(r) for (g, _), r in self._ownership.items() if g == group]

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        claimed = []
        for item in ownership_list:
            key = (Group.of(item), str(item["partition_id"]))
            current = self._ownership.get(key)
            expected = item.get("etag")
            if (current is None and expected) or (current is not None and current["etag"] != expected):
                continue
            record = ownership_record(
                key[0], key[1], str(item.get("owner_id") or ""), new_etag(), time.time()
            )
            self._ownership[key] = record
            claimed.append(dict(record))
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        group = Group.of(checkpoint)
        pid = str(checkpoint["partition_id"])
        sequence = int(checkpoint["sequence_number"])
        current = self._checkpoints.get((group, pid))
        if current is None or current["sequence_number"] < sequence:
            self._checkpoints[(group, pid)] = checkpoint_record(
                group, pid, sequence, str(checkpoint["offset"])
            )

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        return [dict(r) for (g, _), r in self._checkpoints.items() if g == group]


def scheme_of(url: str) -> str:
    """The store kind a URL names ('' when it names none)."""
    text = url.strip()
    if text in ("memory", "file"):
        return text
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    return scheme if scheme in SCHEMES else ""


def open_store(url: str, scope: str) -> OwnershipStore:
    """The store a URL names; call :func:`scheme_of` first to validate user input."""
    scheme = scheme_of(url)
    if scheme == "memory":
        return MemoryOwnershipStore(scope)
    if scheme == "file":
        from fluxion_connect_eventhub.ownership.file import FileOwnershipStore

        return FileOwnershipStore(_file_directory(url), scope)
    if scheme in ("postgresql", "postgres"):
        from fluxion_connect_eventhub.ownership.postgres import PostgresOwnershipStore

        return PostgresOwnershipStore(url, scope)
    if scheme in ("redis", "rediss"):
        from fluxion_connect_eventhub.ownership.redis import RedisOwnershipStore

        return RedisOwnershipStore(url, scope)
    raise ValueError(f"unknown ownership store; expected a URL starting with one of {', '.join(SCHEMES)}")


def _file_directory(url: str) -> str:
    text = url.strip()
    if text == "file":
        return DEFAULT_FILE_DIRECTORY
    if text.startswith("file://"):
        parsed = urlparse(text)
        return unquote(parsed.netloc + parsed.path) or DEFAULT_FILE_DIRECTORY
    return text[len("file:") :] or DEFAULT_FILE_DIRECTORY


__all__ = ["SCHEMES", "MemoryOwnershipStore", "OwnershipStore", "open_store", "scheme_of"]
