"""Prefect overhead: one workload through the bare executor and through the Prefect flow.

Generator (N documents) → three stages → memory sink. The baseline builds the
pipeline from the manifest and runs its executor with an in-memory checkpoint
store; the measured side runs ``run_manifest`` against a Prefect test API
(``prefect_test_harness``, SQLite) with the Prefect block checkpoint store at
its default interval (5 s), observability on (logs, events, artifacts), and the
executor on its own thread as in production. Runs alternate (A B A B ...);
rates are medians, ratios the median of the rounds' own ratios. Two views,
each a result line:

- ``prefect-overhead`` (the goal line): the pipeline's rate while it runs, as
  the executor measures it on both sides (documents in / executor uptime, from
  opening the connectors to the final checkpoint, which in the flow is a block
  save). This is what a long-running deployment pays.
- ``prefect-overhead-end-to-end`` (no goal): documents / wall time of the whole
  call, so the flow also pays its fixed per-run cost (flow and four task runs
  created and moved through their states, the checkpoint claim): 0.24 s
  here, printed on its own line. Once the executor reached 500k documents/s
  that fixed cost was 15% of a 1M-document run, and it shrinks with the run's
  length; a restart's cost is measured by ``bench/latency.py`` instead.

The cyclic garbage collector is paused during each measured run, on both
sides (as ``timeit`` does). The memory sink keeps every delivered document,
so each full collection walks a heap that grows to millions of objects:
measured with the collector on, collections took 3.8-4.7 s of a 6 s run and
their number varied between runs (9-12 full ones), which swung the ratio
from 0.71 to 1.02 between rounds. Documents form no cycles, so reference
counting still frees everything; what is paused is only the walk over the
benchmark's own retained output. Last line: the JSON results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.pipeline import Pipeline

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def manifest(count: int, pipeline_id: str) -> dict[str, Any]:
    return {
        "id": pipeline_id,
        "operationDefs": {
            "orders": {
                "execution": {
                    "type": "streaming",
                    "source": {"type": "generator", "count": count, "seed": 42},
                    "process": {
                        "type": "pipeline",
                        "stages": [
                            {"$set": {"seen": True}},
                            {"$match": {"status": {"$ne": "CANCELLED"}}},
                            {"$set": {"withTax": {"$multiply": ["$total", 1.08]}}},
                        ],
                    },
                    "sink": {"type": "memory", "name": "bench"},
                }
            }
        },
        "runtime": {"microBatchSize": 1000},
    }


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class Timing:
    wall: float
    """Seconds for the whole call."""
    running: float
    """The executor's uptime (its own ``uptimeSeconds``)."""


async def bare(count: int, run: int) -> Timing:
    from fluxion_flows.connectors.memory import MemorySink

    MemorySink.reset("bench")
    started = time.perf_counter()
    pipeline = Pipeline.from_manifest(manifest(count, f"bare{run}"))
    executor = await pipeline.executor(store=MemoryCheckpointStore())
    result = await executor.run()
    elapsed = time.perf_counter() - started
    assert result.metrics["documentsIn"] == count
    return Timing(elapsed, result.metrics["uptimeSeconds"])


async def through_prefect(count: int, run: int) -> Timing:
    from fluxion_flows.connectors.memory import MemorySink
    from fluxion_flows.prefect.flow import run_manifest

    MemorySink.reset("bench")
    started = time.perf_counter()
    state = await run_manifest(manifest(count, f"prefect{run}"), return_state=True)
    elapsed = time.perf_counter() - started
    summary = await state.aresult()
    assert summary["metrics"]["documentsIn"] == count, summary["metrics"]
    return Timing(elapsed, summary["metrics"]["uptimeSeconds"])


def result(workload: str, pairs: list[tuple[float, float]], goal: float | None) -> str:
    """Rates (documents/s, flow then bare) of each round → a result line; the ratio is the median
    of the rounds' own ratios, so a slow moment of the machine hits both sides of one pair."""
    return json.dumps(
        {
            "workload": workload,
            "rate": round(statistics.median(flow for flow, _ in pairs), 1),
            "baseline": "bare-executor",
            "baseline_rate": round(statistics.median(bare for _, bare in pairs), 1),
            "ratio": round(statistics.median(flow / bare for flow, bare in pairs), 3),
            "goal": goal,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.documents

    import logging

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        from prefect.logging.handlers import PrefectConsoleHandler

        for handler in logging.getLogger().handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)
        asyncio.run(through_prefect(1000, -1))  # warm-up: block type registration, imports
        baseline: list[Timing] = []
        measured: list[Timing] = []
        for run in range(args.rounds):
            with collector_paused():
                baseline.append(asyncio.run(bare(n, run)))
            with collector_paused():
                measured.append(asyncio.run(through_prefect(n, run)))
            b, m = baseline[-1], measured[-1]
            print(
                f"round {run + 1}: running: bare {n / b.running:,.0f} docs/s, flow {n / m.running:,.0f}"
                f" docs/s; end to end: bare {n / b.wall:,.0f} docs/s, flow {n / m.wall:,.0f} docs/s"
            )
    running = [(n / m.running, n / b.running) for m, b in zip(measured, baseline, strict=True)]
    wall = [(n / m.wall, n / b.wall) for m, b in zip(measured, baseline, strict=True)]
    fixed = statistics.median(t.wall - t.running for t in measured)
    print(f"flow's fixed per-run cost (wall minus executor uptime, median): {fixed:.3f} s")
    print(result("prefect-overhead-end-to-end", wall, None))
    print(result("prefect-overhead", running, 0.95))


if __name__ == "__main__":
    main()
