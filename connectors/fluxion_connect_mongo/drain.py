"""Drain mode for a change stream: where the backlog ends, and how far the run has come.

A change stream has no end offset to drain to, but on MongoDB every event
carries the cluster time of its write, and every command reply on a replica
set or sharded cluster carries ``operationTime``, the same logical clock (for
a read: the time of the newest oplog entry). So at open the source pings the
server and takes that time as the end of the backlog: the first event after
it ends the run undelivered, and the checkpoint stays at the event before, so
a writer that keeps writing cannot keep a drain going. A stream that comes
back empty is caught up and ends the run as well.

A server that reports no ``operationTime`` gives no clock its events are
known to share (a standalone MongoDB has no change streams at all; test
servers may stamp events with the time they are read), so there the run
drains until the stream comes back empty, as before.

Progress is measured in the source's own units: during an initial snapshot,
documents copied out of the collection's estimated count; then seconds of
cluster time between the first event this run read and the end. Without an
end the stream phase reports no progress until the run is complete.
"""

from __future__ import annotations

from typing import Any

from bson.timestamp import Timestamp
from pymongo.asynchronous.database import AsyncDatabase

from fluxion_connect_mongo.events import event_time
from fluxion_flows.spi import SourceProgress


async def cluster_time(database: AsyncDatabase[Any]) -> Timestamp | None:
    """The cluster's current ``operationTime``; None from a server that reports none."""
    reply = await database.command("ping")
    operation = reply.get("operationTime")
    return operation if isinstance(operation, Timestamp) else None


class DrainPlan:
    """The end of one drain run and the cluster times read so far."""

    def __init__(self, end: Timestamp | None) -> None:
        self.end = end
        """Events after this cluster time are left for the next run (None: read until caught up)."""
        self.finished = False
        """The end was reached (a later event seen, or the stream caught up)."""
        self.snapshot_total = 0
        self._first: float | None = None
        self._last: float | None = None

    def read(self, first: Any, last: Any) -> None:
        """Cluster times of the first and last event of a batch handed on."""
        if self._first is None:
            self._first = event_time(first)
        seconds = event_time(last)
        if seconds is not None:
            self._last = seconds

    def progress(self, copied: int | None) -> SourceProgress | None:
        """Documents during an initial snapshot (``copied`` not None), then seconds of cluster time."""
        if copied is not None:
            return SourceProgress(float(copied), float(max(self.snapshot_total, copied)))
        end = event_time(self.end)
        if self._first is None or end is None:
            return SourceProgress(1.0, 1.0) if self.finished else None
        target = max(0.0, end - self._first)
        if self.finished:
            return SourceProgress(target, target)
        consumed = min(target, max(0.0, (self._last or self._first) - self._first))
        return SourceProgress(consumed, target)
