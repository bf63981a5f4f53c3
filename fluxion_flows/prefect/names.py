"""Names the Prefect layer derives from a pipeline id, in one place so docs, tests and code agree.

Prefect block document names allow only lowercase letters, digits and dashes,
while pipeline ids (``<manifest id>.<operation>``) may contain dots, capitals
and underscores. Where slugging changes the id, a short hash of the original
is appended so ``a.b`` and ``a-b`` never share a checkpoint.
"""

from __future__ import annotations

import hashlib
import re

_NOT_SLUG = re.compile(r"[^a-z0-9]+")

EVENT_PREFIX = "fluxion"
EVENT_STARTED = "fluxion.pipeline.started"
EVENT_HEARTBEAT = "fluxion.pipeline.heartbeat"
EVENT_CHECKPOINTED = "fluxion.pipeline.checkpointed"
EVENT_STOPPED = "fluxion.pipeline.stopped"
EVENT_DEAD_LETTERED = "fluxion.batch.dead-lettered"
FLOW_NAME = "fluxion-pipeline"


def slug(text: str, limit: int = 80) -> str:
    """Lowercase letters, digits and dashes; a hash suffix when that lost information."""
    base = _NOT_SLUG.sub("-", text.lower()).strip("-") or "pipeline"
    if base == text and len(base) <= limit:
        return base
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{base[: limit - 9]}-{digest}"


def checkpoint_block_name(pipeline_id: str) -> str:
    """The checkpoint block document of a pipeline (unless ``checkpoint.block`` names another)."""
    return slug(pipeline_id)


def claim_marker_name(block_name: str, generation: int) -> str:
    """A Prefect variable whose creation (names are unique) is the atomic part of a claim."""
    return f"fluxion-claim-{block_name}-g{generation}"[:255]


def resource_id(pipeline_id: str) -> str:
    """``fluxion.pipeline.<manifest id>.<operation>``: what events and automations match on."""
    return f"{EVENT_PREFIX}.pipeline.{pipeline_id}"


def artifact_key(pipeline_id: str, what: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes: ``fluxion-<pipeline>-<what>``."""
    return f"fluxion-{slug(pipeline_id, 60)}-{what}"
