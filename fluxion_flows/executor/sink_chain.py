"""The sink chain: a main sink with ``fanout`` sinks, or a pipeline sink feeding ``next``.

Every node is a ``SinkNode``: optional stages, an optional sink, children.
A plain sink is (no stages, sink, fanout children): the children receive the
same batch after the sink. A pipeline sink is (stages, no sink, next
children): the children receive the stages' output. Each node's failure is
handled by the error policy on its own, so one failing fanout sink neither
blocks nor duplicates delivery to the others.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fluxion_flows.executor.metrics import PipelineMetrics, SinkMetrics, StageMetrics
from fluxion_flows.executor.policy import (
    BatchAction,
    Failure,
    PolicyRunner,
    Step,
    always,
    never,
    rejected_content,
)
from fluxion_flows.spi.batch import Document
from fluxion_flows.spi.sink import Batch, StreamingSink
from fluxion_flows.stages.base import Stage, manifest_indexed


@dataclass
class SinkNode:
    path: str
    sink: StreamingSink | None = None
    type: str = ""
    stages: Sequence[Stage] = ()
    children: Sequence[SinkNode] = ()
    stage_metrics: list[StageMetrics] = field(default_factory=list, init=False)
    sink_metrics: SinkMetrics | None = field(default=None, init=False)

    def walk(self) -> Iterator[SinkNode]:
        yield self
        for child in self.children:
            yield from child.walk()

    def bind_metrics(self, metrics: PipelineMetrics) -> None:
        for node in self.walk():
            node.stage_metrics = [StageMetrics(s.name, s.path) for s in node.stages]
            metrics.stages.extend(node.stage_metrics)
            if node.sink is not None:
                node.sink_metrics = SinkMetrics(node.type or type(node.sink).__name__, node.path)
                metrics.sinks.append(node.sink_metrics)

    def sinks(self) -> list[StreamingSink]:
        return [node.sink for node in self.walk() if node.sink is not None]

    def all_stages(self) -> list[tuple[str, Stage]]:
        return [
            (f"{node.path}.stages[{i}]", stage)
            for node in self.walk()
            for i, stage in manifest_indexed(node.stages)
        ]


def run_stages(
    stages: Sequence[Stage], gauges: Sequence[StageMetrics], documents: list[Document]
) -> list[Document]:
    """Run stages in order, measuring each; an exception carries the failing stage index."""
    for index, stage in enumerate(stages):
        gauge = gauges[index]
        started = time.perf_counter()
        try:
            output = stage(documents)
        except Exception as error:
            gauge.errors += 1
            raise StageFailed(index, stage, documents, error) from error
        gauge.duration_ms += (time.perf_counter() - started) * 1000
        gauge.invocations += 1
        gauge.input_docs += len(documents)
        gauge.output_docs += len(output)
        documents = output
    return documents


class StageFailed(Exception):
    def __init__(self, index: int, stage: Stage, documents: list[Document], error: Exception) -> None:
        super().__init__(str(error))
        self.index = index
        self.stage = stage
        self.documents = documents
        self.error = error


class SinkChainDelivery:
    """Delivers one batch through the chain, chunked to ``micro_batch_size`` per sink call."""

    def __init__(self, root: SinkNode, policy: PolicyRunner, micro_batch_size: int) -> None:
        self.root = root
        self.policy = policy
        self.micro_batch_size = micro_batch_size

    async def deliver(self, batch: Batch) -> int:
        """Documents the root sink accepted (for ``documentsOut``)."""
        return await self._node(self.root, batch)

    async def _node(self, node: SinkNode, batch: Batch) -> int:
        output = await self._transform(node, batch) if node.stages else batch
        if output is None:
            return 0
        delivered = 0
        if node.sink is not None:
            for chunk in self._chunks(output):
                delivered += await self._write(node, chunk)
        for child in node.children:
            await self._node(child, output)
        return delivered

    async def _transform(self, node: SinkNode, batch: Batch) -> Batch | None:
        outputs = await self.policy.run_batch(
            stage_action(node.stages, node.stage_metrics),
            Failure(Step.STAGE, node.path, list(batch), batch.positions),
            isolate=never if any(stage.stateful for stage in node.stages) else always,
        )
        if not outputs:
            return None
        documents = outputs[0] if len(outputs) == 1 else [d for part in outputs for d in part]
        return Batch(documents, positions=batch.positions, key=batch.key)

    def _chunks(self, batch: Batch) -> Iterator[Batch]:
        size = self.micro_batch_size
        if len(batch) <= size:
            yield batch
            return
        for number, start in enumerate(range(0, len(batch), size)):
            yield Batch(batch[start : start + size], positions=batch.positions, key=f"{batch.key}.{number}")

    async def _write(self, node: SinkNode, chunk: Batch) -> int:
        sink = node.sink
        gauge = node.sink_metrics
        assert sink is not None and gauge is not None

        async def action(documents: list[Document], failure: Failure) -> int:
            batch = chunk if documents is chunk else _part(chunk, documents)
            started = time.perf_counter()
            try:
                await sink.write(batch)
            except Exception:
                gauge.errors += 1
                raise
            finally:
                gauge.duration_ms += (time.perf_counter() - started) * 1000
            gauge.writes += 1
            gauge.documents += len(batch)
            return len(batch)

        failure = Failure(Step.SINK, node.path, chunk, chunk.positions, {"sink": node.type})
        return sum(await self.policy.run_batch(action, failure, isolate=rejected_content))


def _part(chunk: Batch, documents: list[Document]) -> Batch:
    """A part of a chunk being isolated; its idempotency key says which part, so it is stable too."""
    start = next(i for i, d in enumerate(chunk) if d is documents[0])
    return Batch(documents, positions=chunk.positions, key=f"{chunk.key}.{start}+{len(documents)}")


def stage_action(stages: Sequence[Stage], gauges: Sequence[StageMetrics]) -> BatchAction[list[Document]]:
    """Run the stages on (part of) a batch; on failure, name the failing stage in the error context."""

    async def action(documents: list[Document], failure: Failure) -> list[Document]:
        try:
            return run_stages(stages, gauges, documents)
        except StageFailed as failed:
            failure.where = failed.stage.path
            raise failed.error from None

    return action
