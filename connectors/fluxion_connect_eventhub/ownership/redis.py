"""Redis ownership store (redis-py asyncio): load balancing between runs on any number of machines.

Claims and checkpoints are two hashes per (pipeline, namespace, hub,
consumer group), one field per partition. A claim runs as a Lua script, so
the etag comparison and the write are one atomic step on the server; the
claim time is the server's ``TIME``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from fluxion_connect_eventhub.ownership.base import (
    Group,
    OwnershipStore,
    checkpoint_record,
    new_etag,
    ownership_record,
)

KEY_PREFIX = "fluxion:eventhub"

# KEYS[1] ownership hash; ARGV: partition id, expected etag ('' = first claim), owner id, new etag.
_CLAIM = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  if cjson.decode(current)['etag'] ~= ARGV[2] then return false end
elseif ARGV[2] ~= '' then
  return false
end
local now = redis.call('TIME')
local stamp = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local record = cjson.encode({owner_id = ARGV[3], etag = ARGV[4], last_modified_time = stamp})
redis.call('HSET', KEYS[1], ARGV[1], record)
return stamp
"""

# KEYS[1] checkpoint hash; ARGV: partition id, sequence number, encoded checkpoint.
_CHECKPOINT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and tonumber(cjson.decode(current)['sequence_number']) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


class RedisOwnershipStore(OwnershipStore):
    kind = "redis"

    def __init__(self, url: str, scope: str) -> None:
        super().__init__(scope)
        self._client: Redis = Redis.from_url(url)
        self._claim = self._client.register_script(_CLAIM)
        self._advance = self._client.register_script(_CHECKPOINT)

    def describe(self) -> str:
        return "redis"

    def _key(self, group: Group, kind: str) -> str:
        return ":".join((KEY_PREFIX, self.scope, group.namespace, group.hub, group.consumer_group, kind))

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        entries: dict[Any, Any] = await self._client.hgetall(self._key(group, "ownership"))
        records = []
        for pid, raw in entries.items():
            value = orjson.loads(raw)
            records.append(
                ownership_record(
                    group, pid.decode(), value["owner_id"], value["etag"], float(value["last_modified_time"])
                )
            )
        return records

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        claimed: list[dict[str, Any]] = []
        for item in ownership_list:
            group = Group.of(item)
            pid = str(item["partition_id"])
            owner = str(item.get("owner_id") or "")
            etag = new_etag()
            stamp = await self._claim(
                keys=[self._key(group, "ownership")], args=[pid, str(item.get("etag") or ""), owner, etag]
            )
            if stamp:
                text = stamp.decode() if isinstance(stamp, bytes) else str(stamp)
                claimed.append(ownership_record(group, pid, owner, etag, float(text)))
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        group = Group.of(checkpoint)
        value = {"sequence_number": int(checkpoint["sequence_number"]), "offset": str(checkpoint["offset"])}
        await self._advance(
            keys=[self._key(group, "checkpoints")],
            args=[str(checkpoint["partition_id"]), int(checkpoint["sequence_number"]), orjson.dumps(value)],
        )

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        entries: dict[Any, Any] = await self._client.hgetall(self._key(group, "checkpoints"))
        records = []
        for pid, raw in entries.items():
            value = orjson.loads(raw)
            records.append(
                checkpoint_record(group, pid.decode(), int(value["sequence_number"]), value["offset"])
            )
        return records

    async def close(self) -> None:
        await self._client.aclose()
