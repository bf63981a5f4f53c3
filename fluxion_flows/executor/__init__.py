"""The streaming executor and its settings."""

from fluxion_flows.executor.executor import RunResult, StreamingPipelineExecutor
from fluxion_flows.executor.listener import ExecutorListener
from fluxion_flows.executor.options import CheckpointOptions, ErrorPolicy, PolicyKind, RuntimeOptions
from fluxion_flows.executor.policy import PipelineFailed, Step
from fluxion_flows.executor.sink_chain import SinkNode

__all__ = [
    "CheckpointOptions",
    "ErrorPolicy",
    "ExecutorListener",
    "PipelineFailed",
    "PolicyKind",
    "RunResult",
    "RuntimeOptions",
    "SinkNode",
    "Step",
    "StreamingPipelineExecutor",
]
