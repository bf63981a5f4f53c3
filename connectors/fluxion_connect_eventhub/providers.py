"""The ``eventhub`` source and sink providers: options, validation and the catalog.

User errors (a malformed connection string, a missing hub name, an unknown
ownership store, a bad ``startPosition``) surface at creation time as
``OptionError`` naming the option, never the secret value.
"""

from __future__ import annotations

from azure.eventhub.aio import EventHubConsumerClient

from fluxion_connect_eventhub.connection import HubAddress, resolve
from fluxion_connect_eventhub.ownership import SCHEMES, open_store, scheme_of
from fluxion_connect_eventhub.positions import parse_start_plan
from fluxion_connect_eventhub.sink import EventHubSink, SinkSettings
from fluxion_connect_eventhub.source import EventHubSource, SourceSettings
from fluxion_flows.errors import OptionError
from fluxion_flows.spi import (
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    SourceContext,
    SourceProvider,
    StreamDescriptor,
    SyncMode,
    reveal,
)

_CONNECTION = ConnectorOption(
    "connectionString",
    OptionType.SECRET,
    required=True,
    description="Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...[;EntityPath=hub]",
)
_HUB = ConnectorOption(
    "eventHubName",
    OptionType.STRING,
    description="The event hub (default: the connection string's EntityPath).",
)

SOURCE_OPTIONS = OptionSchema(
    options=(
        _CONNECTION,
        _HUB,
        ConnectorOption(
            "consumerGroup", OptionType.STRING, default="$Default", description="Consumer group."
        ),
        ConnectorOption(
            "startPosition",
            OptionType.ANY,
            default="earliest",
            description="Where a partition with no checkpoint starts: earliest, latest, offset:<offset>, "
            "sequenceNumber:<n>, an ISO-8601 time, or a map of partition id to one of these "
            "(key `default` for the others).",
        ),
        ConnectorOption("maxBatchSize", OptionType.INT, default=128, description="Most events per receive."),
        ConnectorOption(
            "maxWaitTime", OptionType.DURATION, description="Longest wait for a receive batch to fill."
        ),
        ConnectorOption(
            "prefetchCount", OptionType.INT, default=300, description="Events each receiver prefetches."
        ),
        ConnectorOption(
            "ownerLevel",
            OptionType.INT,
            description="Exclusive-receiver epoch (default 0: a newer run takes a partition over).",
        ),
        ConnectorOption(
            "queueCapacity",
            OptionType.INT,
            default=32,
            description="Received batches waiting for the pipeline.",
        ),
        ConnectorOption(
            "ownershipStore",
            OptionType.SECRET,
            default="memory",
            description="Where partition claims and checkpoints are shared between runs of this pipeline: "
            "memory (no sharing), file:<directory>, postgresql://..., redis://...",
        ),
        ConnectorOption(
            "loadBalancingInterval",
            OptionType.DURATION,
            default="PT10S",
            description="How often each run re-balances partition claims.",
        ),
        ConnectorOption(
            "partitionOwnershipExpirationInterval",
            OptionType.DURATION,
            description="A claim not renewed for this long is free to take "
            "(default 6 x loadBalancingInterval).",
        ),
        ConnectorOption(
            "loadBalancingStrategy",
            OptionType.ENUM,
            default="greedy",
            choices=("greedy", "balanced"),
            description="greedy claims all free partitions at once; balanced one per interval.",
        ),
        ConnectorOption(
            "lagRefreshInterval",
            OptionType.DURATION,
            default="PT10S",
            description="How often partition properties are read for the lag metrics.",
        ),
    )
)

SINK_OPTIONS = OptionSchema(
    options=(
        _CONNECTION,
        _HUB,
        ConnectorOption(
            "partitionKeyField",
            OptionType.STRING,
            description="Document field (dotted path) whose value is the event's partition key.",
        ),
        ConnectorOption("partitionId", OptionType.STRING, description="Send every event to this partition."),
        ConnectorOption(
            "propertiesField",
            OptionType.STRING,
            aliases=("applicationPropertiesField",),
            description="Document field (a map) written as the event's application properties.",
        ),
        ConnectorOption(
            "batchSize",
            OptionType.INT,
            description="Most events per send (default: as many as fit in one batch).",
        ),
        ConnectorOption(
            "keepMeta", OptionType.BOOL, default=False, description="Also write the source's `_meta`."
        ),
    )
)


def _where(config: ConnectorConfig) -> tuple[str, ...]:
    return tuple(config.path.split(".")) if config.path else ()


def _positive(config: ConnectorConfig, name: str) -> int | None:
    value = config.get(name)
    if value is not None and value < 1:
        raise OptionError(f"option `{name}` must be at least 1, found {value}", path=(*_where(config), name))
    return value if value is None else int(value)


def _address(config: ConnectorConfig) -> HubAddress:
    return resolve(config["connectionString"], config.get("eventHubName"), where=_where(config))


def source_settings(config: ConnectorConfig) -> tuple[SourceSettings, str]:
    """Validated settings and the ownership store URL."""
    store_url = str(reveal(config.get("ownershipStore", "memory")))
    scheme = scheme_of(store_url)
    if not scheme:
        raise OptionError(
            "invalid value for option `ownershipStore`",
            path=(*_where(config), "ownershipStore"),
            hint=f"expected memory, file:<directory>, or a URL starting with one of {', '.join(SCHEMES)}",
        )
    settings = SourceSettings(
        address=_address(config),
        consumer_group=str(config.get("consumerGroup", "$Default")),
        start=parse_start_plan(config.get("startPosition", "earliest"), _where(config)),
        max_batch_size=_positive(config, "maxBatchSize") or 128,
        max_wait_time=config.get("maxWaitTime"),
        prefetch=_positive(config, "prefetchCount") or 300,
        owner_level=config.get("ownerLevel"),
        queue_capacity=_positive(config, "queueCapacity") or 32,
        load_balancing_interval=float(config.get("loadBalancingInterval", 10.0)),
        ownership_expiration=config.get("partitionOwnershipExpirationInterval"),
        load_balancing_strategy=str(config.get("loadBalancingStrategy", "greedy")),
        lag_refresh_interval=float(config.get("lagRefreshInterval", 10.0)),
        shared=scheme != "memory",
    )
    return settings, store_url


class EventHubSourceProvider(SourceProvider):
    shared_claims = True
    """Runs of one pipeline split the partitions through the ownership store: no generation fencing."""

    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            "eventhub",
            "Azure Event Hubs",
            "Events from an event hub's partitions; runs of a pipeline share partitions through an "
            "ownership store (file, PostgreSQL or Redis).",
        )

    def options(self) -> OptionSchema:
        return SOURCE_OPTIONS

    def create(self, context: SourceContext, config: ConnectorConfig) -> EventHubSource:
        settings, store_url = source_settings(config)
        return EventHubSource(context, settings, open_store(store_url, context.pipeline_id))

    async def discover_streams(self, config: ConnectorConfig) -> list[StreamDescriptor]:
        address = _address(config)
        group = str(config.get("consumerGroup", "$Default"))
        client = EventHubConsumerClient.from_connection_string(
            address.connection_string.reveal(), consumer_group=group, eventhub_name=address.hub
        )
        async with client:
            partitions = await client.get_partition_ids()
        return [
            StreamDescriptor(
                name=address.hub,
                namespace=group,
                sync_modes=(SyncMode.INCREMENTAL,),
                cursor_fields=("_meta.sequenceNumber",),
                source_defined_cursor=True,
                partitions=len(partitions),
            )
        ]


class EventHubSinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor(
            "eventhub", "Azure Event Hubs", "Documents as JSON events, in size-aware batches."
        )

    def options(self) -> OptionSchema:
        return SINK_OPTIONS

    def create(self, context: SinkContext, config: ConnectorConfig) -> EventHubSink:
        if config.get("partitionKeyField") and config.get("partitionId") is not None:
            raise OptionError(
                "options `partitionKeyField` and `partitionId` exclude each other",
                path=(*_where(config), "partitionId"),
            )
        settings = SinkSettings(
            address=_address(config),
            partition_key_field=config.get("partitionKeyField"),
            partition_id=config.get("partitionId"),
            properties_field=config.get("propertiesField"),
            batch_size=_positive(config, "batchSize"),
            keep_meta=bool(config.get("keepMeta", False)),
        )
        return EventHubSink(context, settings)

    async def discover_streams(self, config: ConnectorConfig) -> list[StreamDescriptor]:
        address = _address(config)
        return [StreamDescriptor(name=address.hub, sync_modes=(SyncMode.INCREMENTAL,))]
