"""fluxion-flows: Fluxion streaming manifests as resumable pipelines (and Prefect flows).

The public API, for code that embeds pipelines rather than using the ``fluxion`` command::

    pipeline = Pipeline.from_manifest("orders.yaml", connections="connections.yaml")
    executor = await pipeline.executor(mode=RunMode.DRAIN)
    result = await executor.run()

Connector authors need only :mod:`fluxion_flows.spi`.
"""

from fluxion_flows.checkpoint import Checkpoint, CheckpointStore, FileCheckpointStore, MemoryCheckpointStore
from fluxion_flows.errors import FluxionError, ManifestError, OptionError, PlaceholderError, ProviderError
from fluxion_flows.executor import ErrorPolicy, RunResult, RuntimeOptions, StreamingPipelineExecutor
from fluxion_flows.manifest.loader import load_manifest
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.spi import RunMode, StartFrom

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointStore",
    "ErrorPolicy",
    "FileCheckpointStore",
    "FluxionError",
    "ManifestError",
    "MemoryCheckpointStore",
    "OptionError",
    "Pipeline",
    "PlaceholderError",
    "ProviderError",
    "RunMode",
    "RunResult",
    "RuntimeOptions",
    "StartFrom",
    "StreamingPipelineExecutor",
    "load_manifest",
]
