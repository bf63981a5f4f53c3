"""Ownership stores: the compare-and-swap contract the SDK's load balancer relies on.

The same contract runs against every backend: file (always), PostgreSQL and
Redis (marked, so a machine without them can deselect them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fluxion_connect_eventhub.ownership import OwnershipStore, open_store

NS, HUB, GROUP = "localhost:5672", "hub", "$Default"

BACKENDS = [
    pytest.param("file", id="file"),
    pytest.param("memory", id="memory"),
    pytest.param("postgresql://postgres@127.0.0.1:5432/postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis://127.0.0.1:6379/0", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OwnershipStore]:
    url = str(request.param)
    if url == "file":
        url = f"file:{tmp_path}"
    opened = open_store(url, scope=f"test-{uuid.uuid4().hex}")
    yield opened
    await opened.close()


def _claim(pid: str, owner: str, etag: str | None = None) -> dict[str, object]:
    item: dict[str, object] = {
        "fully_qualified_namespace": NS,
        "eventhub_name": HUB,
        "consumer_group": GROUP,
        "partition_id": pid,
        "owner_id": owner,
    }
    if etag is not None:
        item["etag"] = etag
    return item


async def test_first_claim_wins_and_etags_guard_changes(store: OwnershipStore) -> None:
    first = list(await store.claim_ownership([_claim("0", "a")]))
    assert [(o["partition_id"], o["owner_id"]) for o in first] == [("0", "a")]
    assert list(await store.claim_ownership([_claim("0", "b")])) == []  # no etag: not a first claim
    stale = list(await store.claim_ownership([_claim("0", "b", etag="not-the-etag")]))
    assert stale == []
    taken = list(await store.claim_ownership([_claim("0", "b", etag=str(first[0]["etag"]))]))
    assert [o["owner_id"] for o in taken] == ["b"] and taken[0]["etag"] != first[0]["etag"]
    again = list(await store.claim_ownership([_claim("0", "a", etag=str(first[0]["etag"]))]))
    assert again == []
    listed = list(await store.list_ownership(NS, HUB, GROUP))
    assert [(o["partition_id"], o["owner_id"], o["etag"]) for o in listed] == [("0", "b", taken[0]["etag"])]
    assert isinstance(listed[0]["last_modified_time"], float)
    assert list(await store.list_ownership(NS, HUB, "other-group")) == []


async def test_concurrent_claims_of_one_partition_have_one_winner(store: OwnershipStore) -> None:
    results = await asyncio.gather(*(store.claim_ownership([_claim("3", f"o{i}")]) for i in range(8)))
    winners = [o["owner_id"] for result in results for o in result]
    assert len(winners) == 1


async def test_checkpoints_only_move_forward(store: OwnershipStore) -> None:
    base = {"fully_qualified_namespace": NS, "eventhub_name": HUB, "consumer_group": GROUP}
    await store.update_checkpoint({**base, "partition_id": "0", "sequence_number": 5, "offset": "500"})
    await store.update_checkpoint({**base, "partition_id": "0", "sequence_number": 3, "offset": "300"})
    await store.update_checkpoint({**base, "partition_id": "1", "sequence_number": 0, "offset": "0"})
    listed = sorted(await store.list_checkpoints(NS, HUB, GROUP), key=lambda c: c["partition_id"])
    assert [(c["partition_id"], c["sequence_number"], c["offset"]) for c in listed] == [
        ("0", 5, "500"),
        ("1", 0, "0"),
    ]
