"""Prefect block types: a pipeline's checkpoint, and connections whose secrets the UI masks.

Register them with ``prefect block register -m fluxion_flows.prefect.blocks``;
the flow also registers them on first use (:func:`ensure_registered`), so a
fresh workspace needs no setup step.

``FluxionCheckpoint`` is what :class:`~fluxion_flows.prefect.store.PrefectBlockCheckpointStore`
reads and writes: an operator can open it in the UI and see how far a pipeline
got (positions per partition, generation, last commit time). Stage state is
kept there too, because it must be consistent with exactly those positions.

``FluxionConnection`` holds one entry of a connections file. Options that are
secrets (passwords, connection strings, tokens) live in ``secrets``, a
``SecretDict`` whose every value Prefect stores encrypted-at-rest on Cloud and shows
as ``********`` in the UI; they reach a connector as a
:class:`~fluxion_flows.spi.secret.Secret`, which masks itself everywhere else.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import Field

from fluxion_flows.checkpoint import Checkpoint
from fluxion_flows.spi.secret import Secret


class FluxionCheckpoint(Block):
    """The last committed checkpoint of one Fluxion pipeline."""

    _block_type_name: ClassVar[str] = "Fluxion Checkpoint"
    _block_type_slug: ClassVar[str] = "fluxion-checkpoint"
    _description: ClassVar[str] = (
        "Where a Fluxion streaming pipeline resumes: source positions per partition, stage state, "
        "the generation of the run allowed to commit, and the time of the last commit. "
        "Written by the pipeline on its checkpoint interval; edit only to replay on purpose."
    )

    pipeline_id: str = Field(description="<manifest id>.<operation>")
    generation: int = Field(0, description="Fence: a run holding an older generation cannot commit.")
    positions: dict[str, Any] = Field(default_factory=dict, description="Resume point per partition.")
    stage_state: dict[str, Any] = Field(default_factory=dict, description="State of stateful stages.")
    committed_at: dt.datetime | None = Field(None, description="When the last checkpoint was committed.")
    documents: int = Field(0, description="Documents delivered over the pipeline's lifetime.")

    def to_checkpoint(self) -> Checkpoint:
        return Checkpoint(
            pipeline_id=self.pipeline_id,
            generation=self.generation,
            positions=dict(self.positions),
            stage_state=dict(self.stage_state),
            committed_at=self.committed_at.timestamp() if self.committed_at else None,
            documents=self.documents,
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> FluxionCheckpoint:
        committed = checkpoint.committed_at
        return cls(
            pipeline_id=checkpoint.pipeline_id,
            generation=checkpoint.generation,
            positions=dict(checkpoint.positions),
            stage_state=dict(checkpoint.stage_state),
            committed_at=dt.datetime.fromtimestamp(committed, dt.UTC) if committed else None,
            documents=checkpoint.documents,
        )


class FluxionConnection(Block):
    """One connection (Kafka cluster, MongoDB, Event Hub, HTTP endpoint) for ``connectionRef``."""

    _block_type_name: ClassVar[str] = "Fluxion Connection"
    _block_type_slug: ClassVar[str] = "fluxion-connection"
    _description: ClassVar[str] = (
        "A connection a Fluxion manifest refers to with connectionRef. Put passwords, tokens and "
        "connection strings under `secrets` so they stay masked in the UI and in every log."
    )

    connection_ref: str = Field(description="The connectionRef manifests use.")
    type: str = Field(description="Connector type: kafka, mongodb, eventhub, http, ...")
    connector_id: str | None = Field(None, description="Template id validating this config (optional).")
    scope: str = Field("default::default", description="tenant::pipeline this connection is visible to.")
    config: dict[str, Any] = Field(default_factory=dict, description="Options that are not secret.")
    secrets: SecretDict = Field(
        default_factory=lambda: SecretDict({}), description="Secret options (every value masked)."
    )

    def to_entry(self) -> dict[str, Any]:
        """A connections-file entry; secret values become :class:`Secret` (masked, never logged)."""
        config: dict[str, Any] = {"type": self.type, **self.config}
        config.update({key: Secret(str(value)) for key, value in self.secrets.get_secret_value().items()})
        tenant, _, pipeline = self.scope.partition("::")
        entry: dict[str, Any] = {
            "connectionRef": self.connection_ref,
            "scope": {"tenantId": tenant or "default", "pipelineId": pipeline or "default"},
            "config": config,
        }
        if self.connector_id:
            entry["connectorId"] = self.connector_id
        return entry


BLOCK_TYPES: tuple[type[Block], ...] = (FluxionCheckpoint, FluxionConnection)
_registered: set[str] = set()


async def ensure_registered() -> None:
    """Register the block types with the current API once per process (the flow's first use)."""
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL

    key = str(PREFECT_API_URL.value())
    if key in _registered:
        return
    for block_type in BLOCK_TYPES:
        try:
            await block_type.aregister_type_and_schema()
        except ObjectAlreadyExists:  # another run registered it between our read and create
            await block_type.aregister_type_and_schema()
    _registered.add(key)


__all__ = ["BLOCK_TYPES", "FluxionCheckpoint", "FluxionConnection", "ensure_registered"]
