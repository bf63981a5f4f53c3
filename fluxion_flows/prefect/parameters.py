"""Flow parameters as pydantic models, so the Prefect UI renders them as a form and validates them.

The flow's signature uses these types one parameter at a time (the UI shows
one field per parameter, and a deployment's ``parameters:`` in prefect.yaml
reads naturally); :class:`RunParameters` gathers them for the tasks and holds
the checks that span several fields.

Replays. ``startFrom`` other than ``checkpoint`` can move a pipeline *back*
over committed positions, which re-delivers documents. Positions are opaque
(offsets, resume tokens, sequence numbers) and cannot be ordered generically,
so any ``earliest``, ``timestamp`` or ``positions`` start on a pipeline that
has committed positions needs ``confirmReplay: true``; ``latest`` skips
forward and needs none.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fluxion_flows.spi import RunMode, StartFrom


class StartKind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    EARLIEST = "earliest"
    LATEST = "latest"
    TIMESTAMP = "timestamp"
    POSITIONS = "positions"


REWINDING = {StartKind.EARLIEST, StartKind.TIMESTAMP, StartKind.POSITIONS}


class StartFromParameter(BaseModel):
    """Where the source starts: the checkpoint (default), or a replay chosen by an operator."""

    model_config = ConfigDict(extra="forbid", title="Start from")

    kind: Annotated[
        StartKind, Field(description="checkpoint | earliest | latest | timestamp | positions")
    ] = StartKind.CHECKPOINT
    timestamp: Annotated[
        dt.datetime | None, Field(description="For kind=timestamp (UTC when no zone is given).")
    ] = None
    positions: Annotated[
        dict[str, Any] | None, Field(description="For kind=positions: partition → position.")
    ] = None
    confirmReplay: Annotated[
        bool, Field(description="Required to rewind committed positions (documents are delivered again).")
    ] = False

    @model_validator(mode="after")
    def _complete(self) -> StartFromParameter:
        if self.kind is StartKind.TIMESTAMP and self.timestamp is None:
            raise ValueError("startFrom.kind=timestamp needs startFrom.timestamp")
        if self.kind is StartKind.POSITIONS and not self.positions:
            raise ValueError("startFrom.kind=positions needs startFrom.positions (partition → position)")
        return self

    @property
    def rewinds(self) -> bool:
        return self.kind in REWINDING

    def to_start_from(self) -> StartFrom:
        if self.kind is StartKind.TIMESTAMP:
            assert self.timestamp is not None
            moment = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=dt.UTC)
            return StartFrom(kind="timestamp", timestamp=moment.timestamp())
        if self.kind is StartKind.POSITIONS:
            return StartFrom(kind="positions", positions=dict(self.positions or {}))
        return StartFrom(kind=self.kind.value)


ManifestParameter = str | dict[str, Any]
"""A path (relative to the flow run's working directory), an http(s) URL, or the manifest inline."""

ConnectionsParameter = str | list[dict[str, Any]] | None
"""A connections file (path or URL) or inline entries; ``{"block": NAME}`` loads a FluxionConnection."""


class RunParameters(BaseModel):
    """Everything one run needs, validated together."""

    model_config = ConfigDict(extra="forbid")

    manifest: ManifestParameter
    operation: str | None = None
    connections: ConnectionsParameter = None
    templates: str | None = None
    mode: RunMode = RunMode.CONTINUOUS
    overrides: dict[str, Any] = Field(default_factory=dict)
    startFrom: StartFromParameter = Field(default_factory=lambda: StartFromParameter())
    maxDocuments: Annotated[int | None, Field(ge=1)] = None
    maxDuration: Annotated[float | None, Field(gt=0, description="Seconds.")] = None
    variables: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _manifest_present(self) -> RunParameters:
        if isinstance(self.manifest, str) and not self.manifest.strip():
            raise ValueError("manifest: give a path, a URL or the manifest itself")
        return self


__all__ = [
    "ConnectionsParameter",
    "ManifestParameter",
    "RunParameters",
    "StartFromParameter",
    "StartKind",
]
