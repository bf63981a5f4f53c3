"""Azure Event Hubs connectors for fluxion-flows: source and sink ``eventhub`` on ``azure-eventhub`` (aio).

Registered through the entry-point groups ``fluxion_flows.sources`` and
``fluxion_flows.sinks`` exactly like a third-party plugin; the core never
imports this package. Importing it imports the SDK, so an environment
without the ``eventhub`` extra gets the registry's install hint. The
PostgreSQL and Redis ownership stores import their drivers only when chosen.
"""

from fluxion_connect_eventhub.ownership import MemoryOwnershipStore, OwnershipStore, open_store
from fluxion_connect_eventhub.providers import EventHubSinkProvider, EventHubSourceProvider
from fluxion_connect_eventhub.sink import EventHubSink, EventTooLargeError
from fluxion_connect_eventhub.source import EventHubSource

__all__ = [
    "EventHubSink",
    "EventHubSinkProvider",
    "EventHubSource",
    "EventHubSourceProvider",
    "EventTooLargeError",
    "MemoryOwnershipStore",
    "OwnershipStore",
    "open_store",
]
