"""Prefect overhead: one workload through the bare executor and through the Prefect flow.

Generator (N documents) → three stages → memory sink. The baseline builds the
pipeline from the manifest and runs its executor with an in-memory checkpoint
store; the measured side runs ``run_manifest`` against a Prefect test API
(``prefect_test_harness``, SQLite) with the Prefect block checkpoint store at
its default interval (5 s), observability on (logs, events, artifacts), and the
executor on its own thread as in production. Both rates are end to end
(documents / wall time, the flow's four task runs included). Runs alternate
(A B A B ...); medians are reported. Last line: the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
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


async def bare(count: int, run: int) -> float:
    from fluxion_flows.connectors.memory import MemorySink

    MemorySink.reset("bench")
    started = time.perf_counter()
    pipeline = Pipeline.from_manifest(manifest(count, f"bare{run}"))
    executor = await pipeline.executor(store=MemoryCheckpointStore())
    result = await executor.run()
    elapsed = time.perf_counter() - started
    assert result.metrics["documentsIn"] == count
    return count / elapsed


async def through_prefect(count: int, run: int) -> float:
    from fluxion_flows.connectors.memory import MemorySink
    from fluxion_flows.prefect.flow import run_manifest

    MemorySink.reset("bench")
    started = time.perf_counter()
    state = await run_manifest(manifest(count, f"prefect{run}"), return_state=True)
    elapsed = time.perf_counter() - started
    summary = await state.aresult()
    assert summary["metrics"]["documentsIn"] == count, summary["metrics"]
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import logging

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        from prefect.logging.handlers import PrefectConsoleHandler

        for handler in logging.getLogger().handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.WARNING)
        asyncio.run(through_prefect(1000, -1))  # warm-up: block type registration, imports
        baseline: list[float] = []
        measured: list[float] = []
        for run in range(args.rounds):
            baseline.append(asyncio.run(bare(args.documents, run)))
            measured.append(asyncio.run(through_prefect(args.documents, run)))
            print(
                f"round {run + 1}: bare {baseline[-1]:,.0f} docs/s, prefect flow {measured[-1]:,.0f} docs/s"
            )
    rate, base = statistics.median(measured), statistics.median(baseline)
    print(
        f"median: bare executor {base:,.0f} docs/s, prefect flow {rate:,.0f} docs/s, ratio {rate / base:.3f}"
    )
    print(
        json.dumps(
            {
                "workload": "prefect-overhead",
                "rate": round(rate, 1),
                "baseline": "bare-executor",
                "baseline_rate": round(base, 1),
                "ratio": round(rate / base, 3),
                "goal": 0.95,
            }
        )
    )


if __name__ == "__main__":
    main()
