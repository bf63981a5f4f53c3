"""Positions in an Event Hubs partition: how they are written, compared and handed to the SDK.

A checkpointed position names the *last event delivered* in a partition,
``{"sequenceNumber": 41, "offset": "8812"}``; reading resumes right after it
(exclusive), which is exactly how Event Hubs checkpoints work. Sequence
numbers order positions; the offset is kept because the SDK's load balancer
resumes a claimed partition from a checkpoint's offset.

``startPosition`` (where a partition with no checkpoint starts) is written as
``earliest``, ``latest``, ``offset:<offset>``, ``sequenceNumber:<n>`` or an
ISO-8601 time (optionally ``time:<iso>``), or as a map from partition id to
one of those, with ``default`` for the partitions it does not name. Explicit
offsets and sequence numbers are inclusive: ``sequenceNumber:42`` delivers
event 42 first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fluxion_flows.errors import OptionError

SdkPosition = str | int | dt.datetime
"""What the SDK's ``starting_position`` accepts: an offset string, a sequence number or a time."""

EARLIEST = "-1"
LATEST = "@latest"

_SEQUENCE_PREFIXES = ("sequencenumber:", "sequence:", "seq:")


@dataclass(frozen=True)
class Start:
    """A starting position for one partition, in the SDK's terms."""

    position: SdkPosition
    inclusive: bool = False


@dataclass(frozen=True)
class StartPlan:
    """``startPosition`` resolved: a default plus per-partition overrides."""

    default: Start
    partitions: Mapping[str, Start]

    def for_partition(self, partition_id: str) -> Start:
        return self.partitions.get(partition_id, self.default)


def parse_time(text: str) -> dt.datetime:
    """An aware UTC datetime from ISO-8601 (a naive time is taken as UTC)."""
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_start(value: Any) -> Start:
    """One ``startPosition`` value; raises ValueError saying what is accepted."""
    if isinstance(value, dt.datetime):
        return Start(value if value.tzinfo else value.replace(tzinfo=dt.UTC), inclusive=True)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(_EXPECTED)
    text = str(value).strip()
    lowered = text.lower()
    if lowered in ("earliest", "beginning", "-1"):
        return Start(EARLIEST)
    if lowered in ("latest", "end", "@latest"):
        return Start(LATEST)
    if lowered.startswith("offset:"):
        offset = text.split(":", 1)[1].strip()
        if not offset.isdigit():
            raise ValueError(f"an offset is a non-negative integer, found `{offset}`")
        return Start(offset, inclusive=True)
    for prefix in _SEQUENCE_PREFIXES:
        if lowered.startswith(prefix):
            number = text[len(prefix) :].strip()
            if not number.isdigit():
                raise ValueError(f"a sequence number is a non-negative integer, found `{number}`")
            return Start(int(number), inclusive=True)
    if lowered.startswith("time:"):
        text = text[5:]
    elif text.isdigit():
        raise ValueError(f"`{text}` is ambiguous: write offset:{text} or sequenceNumber:{text}")
    try:
        return Start(parse_time(text), inclusive=True)
    except ValueError:
        raise ValueError(_EXPECTED) from None


_EXPECTED = (
    "expected earliest, latest, offset:<offset>, sequenceNumber:<n>, an ISO-8601 time, "
    "or a map of partition id to one of these"
)


def parse_start_plan(value: Any, where: tuple[str, ...] = ()) -> StartPlan:
    """The ``startPosition`` option as a plan; errors name the option (and the partition key)."""
    path = (*where, "startPosition")
    try:
        if isinstance(value, Mapping):
            partitions = {str(k): parse_start(v) for k, v in value.items() if str(k) != "default"}
            default = parse_start(value.get("default", "earliest"))
            return StartPlan(default, partitions)
        return StartPlan(parse_start(value), {})
    except ValueError as exc:
        raise OptionError(f"invalid value for option `startPosition`: {exc}", path=path) from None


@dataclass(frozen=True, order=True)
class EventPosition:
    """The last event delivered in a partition; reading resumes after it."""

    sequence_number: int
    offset: str

    def to_json(self) -> dict[str, Any]:
        return {"sequenceNumber": self.sequence_number, "offset": self.offset}

    @classmethod
    def from_json(cls, value: Any) -> EventPosition | None:
        """A checkpointed position, or None when the value is not one of ours (then it is ignored)."""
        if not isinstance(value, Mapping):
            return None
        sequence = value.get("sequenceNumber", value.get("sequence_number"))
        offset = value.get("offset")
        if isinstance(sequence, bool) or not isinstance(sequence, int) or offset is None:
            return None
        return cls(sequence, str(offset))

    def to_sdk_checkpoint(self, partition_id: str, namespace: str, hub: str, group: str) -> dict[str, Any]:
        """The dict shape the SDK's ``CheckpointStore`` protocol uses."""
        return {
            "fully_qualified_namespace": namespace,
            "eventhub_name": hub,
            "consumer_group": group,
            "partition_id": partition_id,
            "sequence_number": self.sequence_number,
            "offset": self.offset,
        }


def later(first: EventPosition | None, second: EventPosition | None) -> EventPosition | None:
    """The position further along the partition (None counts as "nothing read yet")."""
    if first is None:
        return second
    if second is None:
        return first
    return first if first.sequence_number >= second.sequence_number else second


def furthest(current: EventPosition | None, new: EventPosition) -> EventPosition:
    """``new`` unless ``current`` is further along."""
    return current if current is not None and current.sequence_number > new.sequence_number else new
