"""PostgreSQL ownership store (asyncpg): load balancing between runs on any number of machines.

A claim is one conditional statement: ``UPDATE ... WHERE etag = $expected``
for a partition claimed before, ``INSERT ... ON CONFLICT DO NOTHING`` for a
first claim; a row comes back only when the swap happened. Claim times come
from the database clock, so runs on machines with skewed clocks still agree
on when an ownership expires. Tables are created on first use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import asyncpg

from fluxion_connect_eventhub.ownership.base import (
    Group,
    OwnershipStore,
    checkpoint_record,
    new_etag,
    ownership_record,
)

OWNERSHIP_TABLE = "fluxion_eventhub_ownership"
CHECKPOINT_TABLE = "fluxion_eventhub_checkpoint"
_KEY = "scope text not null, namespace text not null, eventhub text not null, consumer_group text not null, "
_PK = "primary key (scope, namespace, eventhub, consumer_group, partition_id)"
_DDL = (
    f"create table if not exists {OWNERSHIP_TABLE} ({_KEY}partition_id text not null, "
    f"owner_id text not null, etag text not null, last_modified double precision not null, {_PK})",
    f"create table if not exists {CHECKPOINT_TABLE} ({_KEY}partition_id text not null, "
    f'sequence_number bigint not null, "offset" text not null, '
    f"updated_at timestamptz not null default now(), {_PK})",
)
_DDL_LOCK = 0x46_4C_58_45_48  # advisory lock id: concurrent first runs create the tables once
_NOW = "extract(epoch from clock_timestamp())"
_WHERE = "scope = $1 and namespace = $2 and eventhub = $3 and consumer_group = $4"


class PostgresOwnershipStore(OwnershipStore):
    kind = "postgres"

    def __init__(self, dsn: str, scope: str) -> None:
        super().__init__(scope)
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def describe(self) -> str:
        return "postgres"

    async def _connected(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=2)
                async with pool.acquire() as connection, connection.transaction():
                    await connection.execute("select pg_advisory_xact_lock($1)", _DDL_LOCK)
                    for statement in _DDL:
                        await connection.execute(statement)
                self._pool = pool
            return self._pool

    def _key(self, group: Group) -> tuple[str, str, str, str]:
        return (self.scope, group.namespace, group.hub, group.consumer_group)

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        pool = await self._connected()
        rows = await pool.fetch(
            f"select partition_id, owner_id, etag, last_modified from {OWNERSHIP_TABLE} where {_WHERE}",
            *self._key(group),
        )
        return [ownership_record(group, r[0], r[1], r[2], float(r[3])) for r in rows]

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        pool = await self._connected()
        claimed: list[dict[str, Any]] = []
        async with pool.acquire() as connection:
            for item in ownership_list:
                group = Group.of(item)
                pid = str(item["partition_id"])
                owner = str(item.get("owner_id") or "")
                expected = item.get("etag")
                etag = new_etag()
                if expected:
                    row = await connection.fetchrow(
                        f"update {OWNERSHIP_TABLE} set owner_id = $6, etag = $7, last_modified = {_NOW} "
                        f"where {_WHERE} and partition_id = $5 and etag = $8 returning last_modified",
                        *self._key(group),
                        pid,
                        owner,
                        etag,
                        str(expected),
                    )
                else:
                    row = await connection.fetchrow(
                        f"insert into {OWNERSHIP_TABLE} values ($1, $2, $3, $4, $5, $6, $7, {_NOW}) "
                        "on conflict do nothing returning last_modified",
                        *self._key(group),
                        pid,
                        owner,
                        etag,
                    )
                if row is not None:
                    claimed.append(ownership_record(group, pid, owner, etag, float(row[0])))
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        group = Group.of(checkpoint)
        pool = await self._connected()
        await pool.execute(
            f"insert into {CHECKPOINT_TABLE} values ($1, $2, $3, $4, $5, $6, $7, now()) "
            "on conflict (scope, namespace, eventhub, consumer_group, partition_id) do update "
            'set sequence_number = excluded.sequence_number, "offset" = excluded."offset", '
            "updated_at = now() "
            f"where {CHECKPOINT_TABLE}.sequence_number < excluded.sequence_number",
            *self._key(group),
            str(checkpoint["partition_id"]),
            int(checkpoint["sequence_number"]),
            str(checkpoint["offset"]),
        )

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        pool = await self._connected()
        rows = await pool.fetch(
            f'select partition_id, sequence_number, "offset" from {CHECKPOINT_TABLE} where {_WHERE}',
            *self._key(group),
        )
        return [checkpoint_record(group, r[0], int(r[1]), str(r[2])) for r in rows]

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
