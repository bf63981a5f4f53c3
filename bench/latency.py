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
flow start-up and the consumer group join, which waits for the killed
member's 2 s session to expire).

The Prefect API the runs talk to matters for the restart time, so it is
measured both ways (``--api``): ``shared``, one Prefect API server started
here once and given to every run through ``PREFECT_API_URL`` (a deployment
run restarted by a worker: the API is already up), and ``local``, no
configured API, so each ``fluxion run`` starts its own local API (what a
plain ``fluxion run`` pays). Every Prefect process uses a ``PREFECT_HOME``
in a temporary directory (a fresh SQLite database, no user profile).

Result lines (DESIGN.md shape; ``ratio``/``goal`` are null where no
in-run baseline applies): ``latency-kafka-http-5k`` (rate = delivered
docs/s, baseline = the offered load; measured with the shared API unless
``--api local``), ``restart-to-first-delivery`` (shared API) and
``restart-to-first-delivery-local-api``; restart lines carry ``median_ms``,
``max_ms`` and every sample in ``seconds``.

    .venv/bin/python bench/latency.py [--seconds 20] [--rate 5000] [--restarts 3] [--api both]
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fluxion_flows.prefect.server import EmbeddedServer  # noqa: E402
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


@contextmanager
def prefect_api(mode: str) -> Iterator[str | None]:
    """The shared Prefect API's URL for ``shared``; None for ``local`` (each run starts its own)."""
    if mode != "shared":
        yield None
        return
    server = EmbeddedServer()
    server.start()
    try:
        server.wait_ready()
        yield server.api_url
    finally:
        server.stop()


def run_env(run: int, api_url: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LATENCY_RUN": str(run)}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def start(manifest: Path, run: int, log: Path, api_url: str | None) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "fluxion_flows", "run", str(manifest), "-q"],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=run_env(run, api_url),
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


class Pipeline:
    """The ``fluxion run`` subprocess under test; ``run`` numbers its deliveries (``X-Run``)."""

    def __init__(self, manifest: Path, log: Path) -> None:
        self.manifest, self.log = manifest, log
        self.run = -1
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, api_url: str | None) -> float:
        self.run += 1
        started = time.monotonic()
        self.process = start(self.manifest, self.run, self.log, api_url)
        return started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


async def restarts(
    pipeline: Pipeline, server: ScriptedHttpServer, api_url: str | None, count: int
) -> list[float]:
    """SIGKILL the pipeline, start it again, time the new process's first delivery; ``count`` times."""
    seconds = []
    for _ in range(count):
        pipeline.kill()
        started = pipeline.start(api_url)
        run = pipeline.run
        await wait_for(lambda r=run: first_request_of(server, r) is not None, 180, f"restart {run}")
        first = first_request_of(server, run)
        assert first is not None
        seconds.append(first - started)
        print(f"restart {run} ({'shared' if api_url else 'local'} API): {seconds[-1]:.2f} s", flush=True)
    return seconds


async def measure(
    broker: TansuBroker, args: argparse.Namespace, work: Path, apis: dict[str, str | None]
) -> list[dict[str, Any]]:
    topic = broker.create_topic("latency", 4)
    first_api = apis["shared"] if "shared" in apis else apis["local"]
    with ScriptedHttpServer() as server:
        manifest = write_manifest(work, broker.bootstrap, topic, server.url + "/in")
        pipeline = Pipeline(manifest, work / "runs.log")
        producer = Producer(broker.bootstrap, topic, args.rate)
        producing = asyncio.create_task(producer.run())
        pipeline.start(first_api)
        try:
            await wait_for(lambda: first_request_of(server, 0) is not None, 180, "the first delivery")
            await asyncio.sleep(args.warmup)  # let the group settle before measuring
            window_start = time.monotonic()
            await asyncio.sleep(args.seconds)  # the measured window at the offered load
            window_end = time.monotonic()
            samples = sorted(latencies(server, window_start, window_end))
            print(f"window: {len(samples)} documents in {window_end - window_start:.1f} s", flush=True)
            timed = {mode: await restarts(pipeline, server, url, args.restarts) for mode, url in apis.items()}
        finally:
            producer.stopping.set()
            await producing
            pipeline.kill()
    rate = len(samples) / (window_end - window_start)
    cuts = statistics.quantiles(samples, n=100)
    lines: list[dict[str, Any]] = [
        {
            "workload": f"latency-kafka-http-{args.rate / 1000:g}k",
            "rate": round(rate, 1),
            "baseline": "offered load",
            "baseline_rate": args.rate,
            "ratio": round(rate / args.rate, 3),
            "goal": None,
            "p50_ms": round(cuts[49] * 1000, 1),
            "p99_ms": round(cuts[98] * 1000, 1),
            "documents": len(samples),
            "prefect_api": "shared server" if first_api else "local per process",
        }
    ]
    for mode, seconds in timed.items():
        lines.append(restart_line(mode, seconds))
    return lines


def restart_line(mode: str, seconds: list[float]) -> dict[str, Any]:
    return {
        "workload": "restart-to-first-delivery" + ("" if mode == "shared" else "-local-api"),
        "rate": None,
        "baseline": None,
        "baseline_rate": None,
        "ratio": None,
        "goal": None,
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "restarts": len(seconds),
        "seconds": [round(s, 2) for s in seconds],
        "prefect_api": "shared server" if mode == "shared" else "local per process",
    }


async def run_all(broker: TansuBroker, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    modes = ["shared", "local"] if args.api == "both" else [args.api]
    with prefect_api("shared" if "shared" in modes else "local") as shared_url:
        apis = {mode: (shared_url if mode == "shared" else None) for mode in modes}
        return await measure(broker, args, work, apis)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="offered docs/s (default 5000)")
    parser.add_argument("--restarts", type=int, default=3, help="SIGKILL + restarts per API mode (default 3)")
    parser.add_argument(
        "--api", choices=("shared", "local", "both"), default="both", help="Prefect API of the runs"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluxion-latency-") as work, running_broker() as broker:
        os.environ["PREFECT_HOME"] = str(Path(work) / "prefect")  # read by every Prefect process started
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        results = asyncio.run(run_all(broker, args, Path(work)))
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
