"""End-to-end latency of Kafka → HTTP at a fixed 5k docs/s, and restart-to-first-delivery after SIGKILL.

A Tansu broker (4 partitions) and a loopback HTTP server run in this
process; the pipeline is a real ``fluxion run`` subprocess with the
runtime's default batching. A paced producer writes 50 documents every
10 ms (5,000/s), each stamped with ``time.monotonic()`` (one system-wide
clock on Linux, shared with the server thread); the server stamps each
request on arrival. Latency = arrival - stamp, per document, over the
measured window (after a warm-up). Then, with the producer still running,
the pipeline is SIGKILLed and restarted ``--restarts`` times; the time from
starting the new process to the first request it delivers is the
restart-to-first-delivery time (it includes the interpreter, the Prefect
flow start-up and the consumer group join).

Result lines (DESIGN.md shape; ``ratio``/``goal`` are null where no
in-run baseline applies): ``latency-kafka-http-5k`` (rate = delivered
docs/s, baseline = the offered load) and ``restart-to-first-delivery``.

    .venv/bin/python bench/latency.py [--seconds 20] [--rate 5000] [--restarts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.http_server import ScriptedHttpServer  # noqa: E402
from tests.support.kafka_broker import TansuBroker, running_broker  # noqa: E402

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "fetch.max.wait.ms": 100}


def write_manifest(directory: Path, bootstrap: str, topic: str, url: str) -> Path:
    execution = {
        "type": "streaming",
        "source": {"type": "kafka", "bootstrapServers": bootstrap, "topic": topic, **FAST_GROUP},
        "sink": {"type": "http", "endpoint": url, "headers": {"X-Run": "${LATENCY_RUN}"}},
        "checkpoint": {"store": "file", "directory": str(directory / "checkpoints"), "interval": "PT1S"},
    }
    path = directory / "latency.yaml"
    path.write_text(yaml.safe_dump({"id": "latency", "operationDefs": {"flow": {"execution": execution}}}))
    return path


def start(manifest: Path, run: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "fluxion_flows", "run", str(manifest), "-q"],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "LATENCY_RUN": str(run)},
        )


class Producer:
    """Writes ``rate`` stamped documents per second in 10 ms ticks until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.sent = 0
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2)
        await producer.start()
        try:
            started = time.monotonic()
            while not self.stopping.is_set():
                due = int((time.monotonic() - started) * self.rate) - self.sent
                for _ in range(max(0, due)):
                    value = orjson.dumps({"n": self.sent, "sent": time.monotonic()})
                    await producer.send(self.topic, value, key=str(self.sent).encode())
                    self.sent += 1
                await asyncio.sleep(0.01)
            await producer.flush()
        finally:
            await producer.stop()


def latencies(server: ScriptedHttpServer, since: float, until: float) -> list[float]:
    out = []
    for request in server.received("/in"):
        if request.status != 200 or not since <= request.received_at <= until:
            continue
        for document in request.json():
            out.append(request.received_at - document["sent"])
    return out


async def wait_for(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def first_request_of(server: ScriptedHttpServer, run: int) -> float | None:
    for request in server.received("/in"):
        if request.header("x-run") == str(run) and request.status == 200:
            return request.received_at
    return None


async def measure(broker: TansuBroker, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    topic = broker.create_topic("latency", 4)
    with ScriptedHttpServer() as server:
        manifest = write_manifest(work, broker.bootstrap, topic, server.url + "/in")
        log = work / "runs.log"
        producer = Producer(broker.bootstrap, topic, args.rate)
        producing = asyncio.create_task(producer.run())
        process = start(manifest, 0, log)
        try:
            await wait_for(lambda: first_request_of(server, 0) is not None, 120, "the first delivery")
            await asyncio.sleep(args.warmup)  # let the group settle before measuring
            window_start = time.monotonic()
            await asyncio.sleep(args.seconds)  # the measured window at the offered load
            window_end = time.monotonic()
            samples = sorted(latencies(server, window_start, window_end))
            restarts = []
            for run in range(1, args.restarts + 1):
                process.send_signal(signal.SIGKILL)
                process.wait()
                started = time.monotonic()
                process = start(manifest, run, log)
                await wait_for(lambda r=run: first_request_of(server, r) is not None, 120, f"restart {run}")
                first = first_request_of(server, run)
                assert first is not None
                restarts.append(first - started)
        finally:
            producer.stopping.set()
            await producing
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
    rate = len(samples) / (window_end - window_start)
    p50 = statistics.quantiles(samples, n=100)[49] * 1000
    p99 = statistics.quantiles(samples, n=100)[98] * 1000
    return [
        {
            "workload": f"latency-kafka-http-{args.rate / 1000:g}k",
            "rate": round(rate, 1),
            "baseline": "offered load",
            "baseline_rate": args.rate,
            "ratio": round(rate / args.rate, 3),
            "goal": None,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "documents": len(samples),
        },
        {
            "workload": "restart-to-first-delivery",
            "rate": None,
            "baseline": None,
            "baseline_rate": None,
            "ratio": None,
            "goal": None,
            "p50_ms": round(statistics.median(restarts) * 1000, 1),
            "p99_ms": round(max(restarts) * 1000, 1),
            "restarts": len(restarts),
            "seconds": [round(s, 2) for s in restarts],
            "prefect_api": "configured" if os.environ.get("PREFECT_API_URL") else "local per process",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered docs/s (default 5000)")
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluxion-latency-") as work, running_broker() as broker:
        results = asyncio.run(measure(broker, args, Path(work)))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
