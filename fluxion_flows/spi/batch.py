"""What flows from a source to the executor: documents plus the positions they cover."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Document = dict[str, Any]
"""A document is a plain, mutable dict; sources put their metadata under ``_meta``."""

Positions = dict[str, Any]
"""Resume points per partition (partition id -> JSON-serialisable position).

A position is where reading resumes *after* the batch: the next Kafka offset,
the byte offset after the last line, the resume token of the last event.
"""


@dataclass(slots=True)
class RecordFailure:
    """A record the source read but could not turn into a document (e.g. invalid JSON).

    It is routed through the executor's error policy like any failed batch, so
    a dead-letter sink receives it with its position and raw payload excerpt.
    """

    error: str
    position: Mapping[str, Any]
    raw: str = ""
    error_type: str = "DeserializationError"


@dataclass(slots=True)
class SourceBatch:
    """One fetch from a source.

    ``positions`` covers every record of the batch, including the ones in
    ``failures``: once the batch has been handled (delivered, dead-lettered or
    skipped) the executor may checkpoint those positions.
    """

    documents: list[Document]
    positions: Positions = field(default_factory=dict)
    failures: list[RecordFailure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.documents)
