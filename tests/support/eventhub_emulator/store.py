"""Hubs, partitions and their event logs: the emulator's state, free of any networking.

The store is shared by the server thread (appends, reads by receivers) and the test
thread (``EventHubEmulator.events``, ``add_hub``), so mutations take a lock; reads of
the append-only lists are safe under the GIL.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proton import Message, symbol, timestamp

from .codec import ENQUEUED_TIME, OFFSET, PARTITION_KEY, SEQUENCE_NUMBER, annotate


class EntityNotFound(LookupError):
    """A hub or partition that the store does not have; answered as ``amqp:not-found``."""


class InvalidSelector(ValueError):
    """A source filter the emulator cannot interpret; answered as ``amqp:invalid-field``."""


@dataclass(slots=True)
class StoredEvent:
    """One event as the broker keeps it: its broker annotations and the bytes consumers get.

    ``wire`` is the encoded message with the broker annotations already merged in, so
    delivering it costs no encoding. Body and properties are decoded on demand, for
    test assertions only.
    """

    sequence_number: int
    offset: int
    enqueued_time_ms: int
    partition_key: str | None
    wire: bytes

    @property
    def enqueued_time(self) -> datetime:
        """The enqueued time as an aware UTC datetime (what the SDK reports)."""
        return datetime.fromtimestamp(self.enqueued_time_ms / 1000, tz=UTC)

    @property
    def message(self) -> Message:
        """The full decoded message (proton keeps only the first body section)."""
        message = Message()
        message.decode(self.wire)
        return message

    @property
    def body(self) -> Any:
        """The body, ``bytes`` for the SDK's data bodies.

        Proton hands out a view into the message's own buffer, so the message must stay
        alive until the body is copied out.
        """
        message = self.message
        body = message.body
        return bytes(body) if isinstance(body, memoryview | bytearray) else body

    @property
    def properties(self) -> dict[str, Any]:
        """The application properties the producer set."""
        return dict(self.message.properties or {})


@dataclass
class Partition:
    """An append-only event log with the indexes that positions are resolved against."""

    hub: str
    id: str
    events: list[StoredEvent] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    next_offset: int = 0

    def append(self, message: bytes, key: str | None) -> StoredEvent:
        """Store one encoded event message, stamping the broker annotations on it.

        Offsets are byte positions in the log (as in the real service) rather than
        sequence numbers, so code that mixes the two up fails against the emulator too.
        """
        sequence_number = len(self.events)
        now_ms = max(int(time.time() * 1000), self.times[-1] if self.times else 0)
        annotations: dict[symbol, Any] = {
            SEQUENCE_NUMBER: sequence_number,
            OFFSET: str(self.next_offset),
            ENQUEUED_TIME: timestamp(now_ms),
        }
        if key is not None:
            annotations[PARTITION_KEY] = key
        wire, own_key = annotate(message, annotations)
        event = StoredEvent(sequence_number, self.next_offset, now_ms, key or own_key, wire)
        self.events.append(event)
        self.offsets.append(self.next_offset)
        self.times.append(now_ms)
        self.next_offset += len(wire)
        return event

    def properties(self) -> dict[str, Any]:
        """The body of a ``com.microsoft:partition`` READ reply (service field names)."""
        last = self.events[-1] if self.events else None
        return {
            "name": self.hub,
            "partition": self.id,
            "begin_sequence_number": 0,
            "last_enqueued_sequence_number": last.sequence_number if last else -1,
            "last_enqueued_offset": str(last.offset) if last else "-1",
            "last_enqueued_time_utc": timestamp(last.enqueued_time_ms if last else 0),
            "is_partition_empty": last is None,
        }

    def start_index(self, selector: str | None) -> int:
        """Resolve the SDK's selector filter to the index of the first event to deliver.

        The SDK sends ``amqp.annotation.x-opt-<field> <op> '<value>'`` with ``>`` or
        ``>=`` (see ``eventhubs-amqp.md``); ``'-1'`` is the beginning and ``'@latest'``
        the end of the log. A link without a filter starts at the beginning.
        """
        if selector is None:
            return 0
        match = _SELECTOR.fullmatch(selector.strip())
        if match is None:
            raise InvalidSelector(f"unsupported selector filter {selector!r}")
        name, operator, value = match.groups()
        inclusive = operator == ">="
        search = bisect.bisect_left if inclusive else bisect.bisect_right
        if name == "offset":
            if value == "-1":
                return 0
            if value == "@latest":
                return len(self.events)
            return search(self.offsets, _int(value, selector))
        if name == "sequence-number":
            number = _int(value, selector) + (0 if inclusive else 1)
            return min(max(number, 0), len(self.events))
        return search(self.times, _int(value, selector))


_SELECTOR = re.compile(r"amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time)\s*(>=|>)\s*'([^']*)'")


def _int(value: str, selector: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidSelector(f"non-numeric position in selector filter {selector!r}") from None


@dataclass
class Hub:
    """An event hub: a name, a creation time and its partitions ("0".."N-1")."""

    name: str
    partitions: list[Partition]
    created_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    next_round_robin: int = 0

    def properties(self) -> dict[str, Any]:
        """The body of a ``com.microsoft:eventhub`` READ reply (service field names)."""
        return {
            "name": self.name,
            "type": "com.microsoft:eventhub",
            "created_at": timestamp(self.created_at_ms),
            "partition_count": len(self.partitions),
            "partition_ids": [p.id for p in self.partitions],
        }

    def choose_partition(self, key: str | None) -> Partition:
        """Pick the partition for a send to the hub: by key hash if keyed, else round-robin.

        CRC-32 is stable across processes (unlike ``hash``), so a key maps to the same
        partition after an emulator restart, as it does on the service.
        """
        if key is not None:
            return self.partitions[zlib.crc32(key.encode()) % len(self.partitions)]
        partition = self.partitions[self.next_round_robin % len(self.partitions)]
        self.next_round_robin += 1
        return partition


class EventStore:
    """All hubs of one emulator namespace."""

    def __init__(self, hubs: dict[str, int] | None = None) -> None:
        self._lock = threading.RLock()
        self._hubs: dict[str, Hub] = {}
        for name, count in (hubs or {}).items():
            self.add_hub(name, count)

    def add_hub(self, name: str, partitions: int) -> Hub:
        """Create a hub with ``partitions`` partitions; re-adding an existing hub is refused."""
        if partitions < 1:
            raise ValueError("a hub needs at least one partition")
        with self._lock:
            if name in self._hubs:
                raise ValueError(f"hub {name!r} already exists")
            hub = Hub(name, [Partition(name, str(i)) for i in range(partitions)])
            self._hubs[name] = hub
            return hub

    def hub(self, name: str) -> Hub:
        """Return the hub ``name`` (case-insensitive, like the service) or raise EntityNotFound."""
        with self._lock:
            hub = self._hubs.get(name) or next(
                (h for n, h in self._hubs.items() if n.lower() == name.lower()), None
            )
        if hub is None:
            raise EntityNotFound(f"The messaging entity '{name}' could not be found.")
        return hub

    def partition(self, hub: str, partition_id: str) -> Partition:
        """Return a partition of a hub or raise EntityNotFound."""
        for partition in self.hub(hub).partitions:
            if partition.id == partition_id:
                return partition
        raise EntityNotFound(f"Partition '{partition_id}' of '{hub}' could not be found.")

    def append(self, hub: str, partition_id: str | None, messages: list[bytes], key: str | None) -> Partition:
        """Append the events of one transfer to one partition, atomically, and return it.

        A batch is never split across partitions, as on the service.
        """
        with self._lock:
            target = self.hub(hub)
            if partition_id is not None:
                partition = self.partition(hub, partition_id)
            else:
                partition = target.choose_partition(key)
            for message in messages:
                partition.append(message, key)
            return partition

    def events(self, hub: str, partition_id: str) -> list[StoredEvent]:
        """A snapshot of a partition's events."""
        return list(self.partition(hub, partition_id).events)
