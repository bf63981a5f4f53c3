"""Executor overhead: generator → three trivial stages → memory sink, against a plain loop.

Both sides do the same work in the same process (generate the same
documents, apply the same three functions, append to a list); the ratio is
what the executor's queues, metrics and checkpointing cost. Runs alternate
(A B A B ...) and the medians are reported. Last line: the JSON result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from fluxion_flows.checkpoint import MemoryCheckpointStore
from fluxion_flows.connectors.generator import GeneratorSource, make_order
from fluxion_flows.connectors.memory import MemorySink
from fluxion_flows.executor import RuntimeOptions, StreamingPipelineExecutor
from fluxion_flows.spi import Document

SEED = 42


def flag(docs: list[Document]) -> list[Document]:
    for doc in docs:
        doc["seen"] = True
    return docs


def paid(docs: list[Document]) -> list[Document]:
    return [doc for doc in docs if doc["status"] != "CANCELLED"]


def tax(docs: list[Document]) -> list[Document]:
    for doc in docs:
        doc["withTax"] = doc["total"] * 1.08
    return docs


STAGES = (flag, paid, tax)


def plain_loop(count: int, batch: int) -> int:
    out: list[Document] = []
    for start in range(0, count, batch):
        docs = [make_order(SEED, n) for n in range(start, min(count, start + batch))]
        for stage in STAGES:
            docs = stage(docs)
        out.extend(docs)
    return len(out)


async def through_executor(count: int, batch: int) -> int:
    MemorySink.reset("bench")
    sink = MemorySink("bench")
    executor = StreamingPipelineExecutor(
        "bench.executor",
        GeneratorSource(SEED, count, None, 0),
        sink,
        STAGES,
        runtime=RuntimeOptions(micro_batch_size=batch),
        store=MemoryCheckpointStore(),
    )
    await executor.run()
    return len(sink.documents)


def timed(run: object) -> float:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours: list[float] = []
    baseline: list[float] = []
    expected = plain_loop(args.documents // 100, args.batch)  # warm-up, and a correctness check
    assert asyncio.run(through_executor(args.documents // 100, args.batch)) == expected
    for _ in range(args.rounds):
        ours.append(timed(lambda: asyncio.run(through_executor(args.documents, args.batch))))
        baseline.append(timed(lambda: plain_loop(args.documents, args.batch)))
    rate = args.documents / statistics.median(ours)
    baseline_rate = args.documents / statistics.median(baseline)
    print(f"executor:   {rate:,.0f} docs/s (median of {args.rounds})")
    print(f"plain loop: {baseline_rate:,.0f} docs/s")
    result = {
        "workload": "executor",
        "rate": round(rate, 1),
        "baseline": "plain-python-loop",
        "baseline_rate": round(baseline_rate, 1),
        "ratio": round(rate / baseline_rate, 3),
        "goal": 0.8,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
