"""The connector SPI: everything a plugin author implements or receives.

A source plugin subclasses :class:`SourceProvider` and (usually)
:class:`AbstractAsyncStreamingSource`; a sink plugin subclasses
:class:`SinkProvider` and :class:`StreamingSink`. Register the provider class
under the entry-point group ``fluxion_flows.sources`` or ``fluxion_flows.sinks``
with its type id as the entry-point name.
"""

from fluxion_flows.spi.batch import Document, Positions, RecordFailure, SourceBatch
from fluxion_flows.spi.options import (
    ConnectorOption,
    OptionSchema,
    OptionType,
    parse_duration,
    to_bool,
    to_int,
)
from fluxion_flows.spi.provider import (
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorKind,
    SinkProvider,
    SourceProvider,
    StreamDescriptor,
    SyncMode,
)
from fluxion_flows.spi.secret import Secret, reveal
from fluxion_flows.spi.sink import Batch, NonRetryableError, RetryLater, SinkContext, StreamingSink
from fluxion_flows.spi.source import (
    AbstractAsyncStreamingSource,
    RunMode,
    SourceContext,
    SourceFailure,
    SourceProgress,
    StartFrom,
    StreamingSource,
)

__all__ = [
    "AbstractAsyncStreamingSource",
    "Batch",
    "ConnectorConfig",
    "ConnectorDescriptor",
    "ConnectorKind",
    "ConnectorOption",
    "Document",
    "NonRetryableError",
    "OptionSchema",
    "OptionType",
    "Positions",
    "RecordFailure",
    "RetryLater",
    "RunMode",
    "Secret",
    "SinkContext",
    "SinkProvider",
    "SourceBatch",
    "SourceContext",
    "SourceFailure",
    "SourceProgress",
    "SourceProvider",
    "StartFrom",
    "StreamDescriptor",
    "StreamingSink",
    "StreamingSource",
    "SyncMode",
    "parse_duration",
    "reveal",
    "to_bool",
    "to_int",
]
