"""Kafka connectors for fluxion-flows: source and sink ``kafka`` on aiokafka.

Registered through the entry-point groups ``fluxion_flows.sources`` and
``fluxion_flows.sinks`` exactly like a third-party plugin; the core never
imports this package. Importing it imports aiokafka, so an environment
without the ``kafka`` extra gets the registry's install hint.
"""

from fluxion_connect_kafka.providers import KafkaSinkProvider, KafkaSourceProvider
from fluxion_connect_kafka.sink import KafkaFeatureUnsupported, KafkaSink, RecordDeliveryError
from fluxion_connect_kafka.source import KafkaSource

__all__ = [
    "KafkaFeatureUnsupported",
    "KafkaSink",
    "KafkaSinkProvider",
    "KafkaSource",
    "KafkaSourceProvider",
    "RecordDeliveryError",
]
