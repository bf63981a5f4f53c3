"""A :class:`CheckpointStore` on Prefect blocks: the default store inside Prefect runs.

Cost. ``Block.save(overwrite=True)`` makes about six API calls (type and schema
registration, create, conflict, read, update: ~150 ms here). This store
registers the block type once per process and, per save, makes three calls:
a read of the document (the stored generation, and positions to merge), a
read of the claim marker above its own generation, and one ``PATCH``. The executor only saves on its
checkpoint interval (default 5 s) and at shutdown, never per batch.

The fence. Prefect's API has no conditional update for block documents (no
version or ETag), so a plain read-check-write could let two claims pick the
same generation. Claims therefore go through Prefect *variables*, whose names
are unique server-side: claiming generation ``g`` means creating the variable
``fluxion-claim-<block>-g<g>``, which exactly one run can do. A save by
generation ``g`` is refused when the document holds a newer generation or
the marker ``...-g<g+1>`` exists (markers older than the last few are deleted,
so the document check covers long-stale runs).

Residual race (documented, not hidden). A claim that creates ``g+1`` after
the old run's marker check but before its ``PATCH`` lands lets that one
``PATCH`` through, overwriting the new run's claim record. Consequences are
bounded: the new run already read its start positions (which are not ahead of
what the old run commits), so the result is duplicates, never loss; the old
run's *next* save sees the marker and stops; and the generation counter cannot
be reused because it lives in the markers, not in the overwritten document.
The window is one ``PATCH`` round trip (~10-50 ms) every checkpoint interval.
Deployment concurrency limit 1 keeps two runs from overlapping in the first place.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentUpdate, VariableCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from fluxion_flows.checkpoint import Checkpoint, CheckpointStore, StaleGenerationError
from fluxion_flows.checkpoint.store import check_generation, claimed
from fluxion_flows.prefect.blocks import FluxionCheckpoint, ensure_registered
from fluxion_flows.prefect.names import checkpoint_block_name, claim_marker_name

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient


@dataclass
class _Record:
    document_id: UUID
    name: str
    checkpoint: Checkpoint
    shared: bool = False


_KEPT_MARKERS = 100


class PrefectBlockCheckpointStore(CheckpointStore):
    """Checkpoints in ``FluxionCheckpoint`` block documents, one per pipeline."""

    def __init__(self, block_name: str | None = None) -> None:
        self.block_name = block_name
        self._records: dict[str, _Record] = {}

    def name_for(self, pipeline_id: str) -> str:
        return self.block_name or checkpoint_block_name(pipeline_id)

    # ---------------------------------------------------------------- protocol
    async def load(self, pipeline_id: str) -> Checkpoint | None:
        async with get_client() as client:
            found = await self._read(client, self.name_for(pipeline_id))
        return found[1] if found else None

    async def claim(self, pipeline_id: str, *, shared: bool = False) -> Checkpoint:
        await ensure_registered()
        name = self.name_for(pipeline_id)
        async with get_client() as client:
            found = await self._read(client, name)
            stored = found[1] if found else None
            if shared:
                generation = await self._join_generation(client, name, stored)
                if stored is None:  # another run of the group may have written it meanwhile
                    found = await self._read(client, name)
                    stored = found[1] if found else None
                record = claimed(stored, pipeline_id, shared=True)
                record.generation = max(record.generation, generation)
            else:
                generation = await self._take_generation(client, name, stored)
                record = claimed(stored, pipeline_id, shared=False)
                record.generation = generation
            document_id = await self._write(client, name, found[0] if found else None, record)
        self._records[pipeline_id] = _Record(document_id, name, copy.deepcopy(record), shared)
        return record

    async def save(self, checkpoint: Checkpoint) -> None:
        record = self._records.get(checkpoint.pipeline_id)
        name = record.name if record else self.name_for(checkpoint.pipeline_id)
        async with get_client() as client:
            found = await self._read(client, name)
            stored = found[1] if found else None
            check_generation(checkpoint.pipeline_id, checkpoint.generation, stored)
            newer = await client.read_variable_by_name(claim_marker_name(name, checkpoint.generation + 1))
            if newer is not None:
                raise StaleGenerationError(
                    checkpoint.pipeline_id, checkpoint.generation, checkpoint.generation + 1
                )
            merged = stored.merged_with(checkpoint) if stored else checkpoint
            document_id = await self._write(client, name, found[0] if found else None, merged)
        self._records[checkpoint.pipeline_id] = _Record(
            document_id, name, copy.deepcopy(merged), record.shared if record else False
        )

    # ---------------------------------------------------------------- helpers
    async def _read(self, client: PrefectClient, name: str) -> tuple[UUID, Checkpoint] | None:
        try:
            document = await client.read_block_document_by_name(
                name=name, block_type_slug=FluxionCheckpoint.get_block_type_slug()
            )
        except ObjectNotFound:
            return None
        data: dict[str, Any] = dict(document.data)
        return document.id, FluxionCheckpoint.model_validate(data).to_checkpoint()

    async def _take_generation(self, client: PrefectClient, name: str, stored: Checkpoint | None) -> int:
        """Create the first free claim marker above the stored generation: the atomic part of a claim."""
        generation = (stored.generation if stored else 0) + 1
        while True:
            try:
                await client.create_variable(
                    VariableCreate(name=claim_marker_name(name, generation), value=generation)
                )
            except ObjectAlreadyExists:
                generation += 1
                continue
            break
        # Markers stay contiguous, so "marker g+1 exists" means "a newer run claimed": the fence in
        # save(). Only markers far behind (whose runs the block's own generation fences anyway)
        # are pruned, one per claim, to keep the variable list bounded.
        if generation > _KEPT_MARKERS:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_variable_by_name(claim_marker_name(name, generation - _KEPT_MARKERS))
        return generation

    async def _join_generation(self, client: PrefectClient, name: str, stored: Checkpoint | None) -> int:
        """The generation a shared claim joins: the stored one, or the group's first.

        Runs of a consumer group often start together on a pipeline never run
        before. Each taking its own generation (as an exclusive claim does)
        would fence all but the last; instead the first creates the marker of
        generation 1 and the others, finding it taken, join the newest marker.
        """
        if stored is not None:
            return stored.generation
        generation = 1
        try:
            await client.create_variable(VariableCreate(name=claim_marker_name(name, 1), value=1))
            return generation
        except ObjectAlreadyExists:
            pass
        while await client.read_variable_by_name(claim_marker_name(name, generation + 1)) is not None:
            generation += 1
        return generation

    async def _write(
        self, client: PrefectClient, name: str, document_id: UUID | None, checkpoint: Checkpoint
    ) -> UUID:
        block = FluxionCheckpoint.from_checkpoint(checkpoint)
        document = block._to_block_document(name=name, include_secrets=True)
        if document_id is not None:
            update = BlockDocumentUpdate(block_schema_id=document.block_schema_id, data=document.data)
            try:
                await client.update_block_document(document_id, update)
                return document_id
            except ObjectNotFound:
                pass  # deleted by an operator: recreate it below
        return await block.asave(name, overwrite=True, client=client)


__all__ = ["PrefectBlockCheckpointStore"]
