"""The stage engine: MongoDB-style aggregation stages and expressions, compiled once.

``compile_pipeline(specs, file=..., path=...)`` validates a manifest's stage
list and returns one :class:`Stage` per spec for the executor. See
``README.md`` in this package for which stages are per document, per
micro-batch, or stateful across batches.
"""

from fluxion_flows.stages.base import FunctionStage, Stage, StageRuntimeError, as_stage
from fluxion_flows.stages.compiler import compile_pipeline

__all__ = ["FunctionStage", "Stage", "StageRuntimeError", "as_stage", "compile_pipeline"]
