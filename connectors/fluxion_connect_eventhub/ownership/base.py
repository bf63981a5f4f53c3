"""What every ownership store shares: the SDK's record shapes and the scope of a pipeline.

The SDK's load balancer (``azure.eventhub.aio.CheckpointStore`` protocol) needs
a store where claiming a partition is a compare-and-swap on an ``etag``: a
claim carrying the etag it last saw succeeds only if nobody claimed the
partition since, and a claim without an etag succeeds only for a partition no
one ever claimed. Each implementation gets that atomicity from its backend (a
conditional UPDATE, a Lua script, a file lock).

Records are kept per *scope* (the pipeline id), hub namespace, hub and
consumer group, so two pipelines reading one hub never see each other's
claims or checkpoints even when they share a database. A checkpoint only ever
moves forward: a run that lost a partition and writes late cannot rewind the
new owner, and every stored position was delivered by the run that wrote it.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from azure.eventhub.aio import CheckpointStore


@dataclass(frozen=True)
class Group:
    """The coordinates every record carries."""

    namespace: str
    hub: str
    consumer_group: str

    @classmethod
    def of(cls, record: dict[str, Any]) -> Group:
        return cls(
            str(record["fully_qualified_namespace"]),
            str(record["eventhub_name"]),
            str(record["consumer_group"]),
        )


def ownership_record(
    group: Group, partition_id: str, owner_id: str, etag: str, last_modified: float
) -> dict[str, Any]:
    """An ownership in the shape ``list_ownership`` / ``claim_ownership`` return."""
    return {
        "fully_qualified_namespace": group.namespace,
        "eventhub_name": group.hub,
        "consumer_group": group.consumer_group,
        "partition_id": partition_id,
        "owner_id": owner_id,
        "etag": etag,
        "last_modified_time": last_modified,
    }


def checkpoint_record(group: Group, partition_id: str, sequence_number: int, offset: str) -> dict[str, Any]:
    """A checkpoint in the shape ``list_checkpoints`` returns."""
    return {
        "fully_qualified_namespace": group.namespace,
        "eventhub_name": group.hub,
        "consumer_group": group.consumer_group,
        "partition_id": partition_id,
        "sequence_number": sequence_number,
        "offset": offset,
    }


def new_etag() -> str:
    return uuid.uuid4().hex


class OwnershipStore(CheckpointStore):
    """A shared, durable ``CheckpointStore`` for the SDK's load balancer, scoped to one pipeline."""

    kind: str = "store"

    def __init__(self, scope: str) -> None:
        self.scope = scope

    @abstractmethod
    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]: ...

    @abstractmethod
    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]: ...

    @abstractmethod
    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None: ...

    @abstractmethod
    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]: ...

    async def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        """A secret-free name for logs."""
        return self.kind
