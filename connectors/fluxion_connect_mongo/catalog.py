"""Catalogs: the collections of a database as streams (``_id`` key, ``resumeToken`` cursor)."""

from __future__ import annotations

from pymongo.errors import PyMongoError

from fluxion_connect_mongo._common import make_client, option_path, scrub
from fluxion_flows.errors import ProviderError
from fluxion_flows.spi import ConnectorConfig, StreamDescriptor, SyncMode

SERVER_SELECTION_MS = 10_000


def describe(database: str, collection: str) -> StreamDescriptor:
    return StreamDescriptor(
        name=collection,
        namespace=database,
        json_schema={"type": "object", "properties": {"_id": {}}, "required": ["_id"]},
        sync_modes=(SyncMode.FULL_REFRESH, SyncMode.INCREMENTAL),
        cursor_fields=("resumeToken",),
        source_defined_cursor=True,
        primary_keys=(("_id",),),
    )


async def discover(config: ConnectorConfig) -> list[StreamDescriptor]:
    """One stream per collection (only the configured one when ``collection`` is set), minus system ones."""
    database = config["database"]
    collection = config.get("collection")
    client = make_client(config, serverSelectionTimeoutMS=SERVER_SELECTION_MS)
    try:
        names = await client[database].list_collection_names()
    except PyMongoError as exc:
        raise ProviderError(
            f"cannot list the collections of `{database}`: {scrub(str(exc), config['connectionString'])}",
            path=option_path(config, "connectionString"),
        ) from None
    finally:
        await client.close()
    if collection:
        names = [collection]
    return [describe(database, name) for name in sorted(names) if not name.startswith("system.")]
