"""An Azure Event Hubs AMQP 1.0 emulator for tests (the SDK's ``UseDevelopmentEmulator`` mode).

Test support only, never shipped. Built on python-qpid-proton's protocol engine, with
the interoperability fixes described in ``/work/shared/reference/eventhubs-amqp.md``.

Supported: several hubs with N partitions; ``$cbs`` put-token (every token accepted);
``$management`` READ of hub and partition properties; sending to a hub (round-robin, or
by partition key hashed to a stable partition) or to a partition, single events and the
SDK's batches; receiving from a partition from any position the SDK's selector filter
expresses; owner-level (epoch) receivers; consumer groups; link credit (backpressure).

Not emulated: receiver runtime metrics (``track_last_enqueued_event_properties`` gets no
values), consumer group existence checks and the five-readers-per-partition quota,
retention, message size limits beyond the advertised 1 MiB, and persistence across
processes (events live in memory; they survive ``stop()``/``start()`` of one instance).
"""

from .emulator import EventHubEmulator
from .server import ReceiverInfo
from .store import StoredEvent

__all__ = ["EventHubEmulator", "ReceiverInfo", "StoredEvent"]
