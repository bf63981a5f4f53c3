"""Run a generator → slow sink pipeline and report RSS samples (``python -m tests.chaos.memory_runner N``).

Runs in its own process so the test process's memory does not count. The
sink sleeps in proportion to each batch, ten times as long per document as
the source takes to produce one (measured first, on this machine), so the
source always outruns it and only backpressure keeps memory bounded. A
thread samples ``VmRSS`` from ``/proc/self/status`` every 20 ms together
with the documents delivered so far. The last line of output is a JSON
object with the samples' summary.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from typing import Any

import orjson

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import (
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    StreamingSink,
)


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class SlowSink(StreamingSink):
    """Sleeps ``per_document`` seconds per document of each batch; counts what it accepted."""

    delivered = 0

    def __init__(self, per_document: float) -> None:
        self.per_document = per_document

    async def write(self, batch: Batch) -> None:
        await asyncio.sleep(len(batch) * self.per_document)
        SlowSink.delivered += len(batch)


class SlowSinkProvider(SinkProvider):
    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("slow", "Slow sink", "Sleeps in proportion to each batch (tests only).")

    def options(self) -> OptionSchema:
        return OptionSchema([ConnectorOption("perDocument", OptionType.FLOAT, default=0.0)])

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return SlowSink(float(config["perDocument"]))


def manifest(count: int, per_document: float) -> dict[str, Any]:
    execution = {
        "type": "streaming",
        "source": {"type": "generator", "count": count},
        "sink": {"type": "slow", "perDocument": per_document},
        "checkpoint": {"store": "memory", "interval": "PT1S"},
    }
    return {"id": "memory", "operationDefs": {"flow": {"execution": execution}}}


async def run(count: int, per_document: float) -> float:
    registry = ProviderRegistry(extra=[SlowSinkProvider()])
    executor = await Pipeline.from_manifest(manifest(count, per_document), registry=registry).executor(
        store=MemoryCheckpointStore()
    )
    started = time.perf_counter()
    await executor.run()
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    probe = 100_000
    source_seconds = asyncio.run(run(probe, 0.0))  # the source's own speed (with a sink that never waits)
    per_document = 10 * source_seconds / probe
    SlowSink.delivered = 0
    samples: list[tuple[float, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            samples.append((time.monotonic(), SlowSink.delivered, rss_bytes()))

    before = rss_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds = asyncio.run(run(count, per_document))
    done.set()
    sampler.join()
    assert SlowSink.delivered == count, (SlowSink.delivered, count)
    warm = [rss for _, delivered, rss in samples if delivered >= count // 10]
    print(
        orjson.dumps(
            {
                "documents": count,
                "seconds": round(seconds, 2),
                "sourceRate": round(probe / source_seconds),
                "sinkRate": round(count / seconds),
                "rssBefore": before,
                "rssSteady": statistics.median(warm),
                "rssPeak": max(rss for _, _, rss in samples),
                "samples": len(samples),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
