"""Benchmark: the HTTP sink vs a plain httpx.AsyncClient loop posting the same batches.

200k documents in batches of 500, POSTed as JSON arrays to one local server
(uvicorn in a subprocess, a minimal ASGI app that reads the body and answers
204). Both sides serialise each batch with orjson and send one batch at a
time, as the executor does; the sink adds what it does in production
(idempotency key, retry and status handling, metrics). Rounds interleave
A B A B and the medians are compared. Last line: the JSON result per DESIGN.md.

    .venv/bin/python bench/http_sink.py [--docs 200000] [--batch 500] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fluxion_flows.connectors.http import HttpSinkProvider  # noqa: E402
from fluxion_flows.registry import ProviderRegistry  # noqa: E402
from fluxion_flows.spi import Batch, ConnectorKind, SinkContext  # noqa: E402

SERVER = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
            http="h11", lifespan="off", interface="asgi3")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, f"http://127.0.0.1:{port}/ingest"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("benchmark server did not start")


def make_batches(total: int, size: int) -> list[list[dict[str, Any]]]:
    docs = [
        {
            "orderId": f"o-{i:08d}",
            "customer": {"id": i % 977, "tier": ("gold", "silver", "bronze")[i % 3]},
            "amount": round(i * 0.37, 2),
            "items": [{"sku": f"s{i % 50}", "qty": 1 + i % 4}],
            "processed": True,
        }
        for i in range(total)
    ]
    return [docs[i : i + size] for i in range(0, total, size)]


async def run_sink(url: str, batches: list[list[dict[str, Any]]]) -> float:
    registry = ProviderRegistry(extra=[HttpSinkProvider()])
    config = registry.configure(ConnectorKind.SINK, "http", {"endpoint": url})
    sink = registry.create_sink(SinkContext(pipeline_id="bench", path="bench.sink"), config)
    wrapped = [Batch(b, {"bench": (n + 1) * len(b)}, key=f"bench-{n}") for n, b in enumerate(batches)]
    await sink.open()
    try:
        started = time.perf_counter()
        for batch in wrapped:
            await sink.write(batch)
        elapsed = time.perf_counter() - started
    finally:
        await sink.close()
    return sum(len(b) for b in batches) / elapsed


async def run_httpx_loop(url: str, batches: list[list[dict[str, Any]]]) -> float:
    async with httpx.AsyncClient() as client:
        headers = {"Content-Type": "application/json"}
        started = time.perf_counter()
        for batch in batches:
            response = await client.post(url, content=orjson.dumps(batch), headers=headers)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
    return sum(len(b) for b in batches) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    batches = make_batches(args.docs, args.batch)
    process, url = start_server()
    try:
        await run_httpx_loop(url, batches[:20])  # warm up both paths and the server
        await run_sink(url, batches[:20])
        ours: list[float] = []
        base: list[float] = []
        for round_number in range(1, args.rounds + 1):
            gc.collect()
            ours.append(await run_sink(url, batches))
            gc.collect()
            base.append(await run_httpx_loop(url, batches))
            line = f"round {round_number}: sink {ours[-1]:,.0f} docs/s, httpx loop {base[-1]:,.0f} docs/s"
            print(line, flush=True)
    finally:
        process.terminate()
        process.wait(timeout=10)

    rate, baseline = statistics.median(ours), statistics.median(base)
    ratio = rate / baseline
    paired = statistics.median(a / b for a, b in zip(ours, base, strict=True))
    print(f"median: sink {rate:,.0f} docs/s vs httpx loop {baseline:,.0f} docs/s (ratio {ratio:.3f})")
    print(f"median of per-round ratios (less sensitive to machine load drift): {paired:.3f}")
    print(
        json.dumps(
            {
                "workload": "http-sink",
                "rate": round(rate, 1),
                "baseline": "httpx-loop",
                "baseline_rate": round(baseline, 1),
                "ratio": round(ratio, 3),
                "goal": 0.9,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
