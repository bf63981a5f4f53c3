"""One Prefect test API (``prefect_test_harness``, SQLite) for the whole session, plus helpers.

Flows run in-process against it; subprocesses (serve, crash, CLI) get its URL
through ``PREFECT_API_URL``. Nothing waits by sleeping: helpers poll a
condition until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """The harness's API URL (started once: about 8 s)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        _restart_prefect_workers()
        yield str(PREFECT_API_URL.value())


def _restart_prefect_workers() -> None:
    """Stop Prefect's process-wide event and log workers so they restart against the harness.

    Tests that ran earlier in this process (e.g. the chaos suite's Prefect scenario) started them
    against the session's other API; left running, they keep sending this harness's events there.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=10)


@pytest.fixture
def api_env(prefect_api: str) -> dict[str, str]:
    """Environment for subprocesses talking to the harness."""
    return {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}


def wait_for(condition: Callable[[], Any], what: str, deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


async def async_wait_for(condition: Callable[[], Any], what: str, deadline: float = 30.0) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def write_orders(path: Path, count: int, start: int = 0) -> None:
    with path.open("a") as handle:
        for n in range(start, start + count):
            handle.write(json.dumps({"n": n, "status": "PAID" if n % 2 else "NEW"}) + "\n")


def file_manifest(tmp: Path, pipeline: str, *, store: str | None = None, **extra: Any) -> Path:
    """file → $match PAID → file; checkpoints in the Prefect block store unless ``store`` is given."""
    checkpoint: dict[str, Any] = {"interval": "PT0.2S"}
    if store:
        checkpoint["store"] = store
    document: dict[str, Any] = {
        "id": pipeline,
        "operationDefs": {
            "orders": {
                "execution": {
                    "type": "streaming",
                    "source": {"type": "file", "path": str(tmp / "in.jsonl"), **extra.pop("source", {})},
                    "process": {"type": "pipeline", "stages": [{"$match": {"status": "PAID"}}]},
                    "sink": extra.pop("sink", {"type": "file", "path": str(tmp / "out.jsonl")}),
                }
            }
        },
        "runtime": {"microBatchSize": 10, "maxBatchWait": "PT0.05S", "metricsInterval": "PT0.5S"},
        "checkpoint": checkpoint,
        **extra,
    }
    path = tmp / f"{pipeline}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def generator_manifest(
    tmp: Path, pipeline: str, rate: float = 500, checkpoint: dict[str, Any] | None = None, **runtime: Any
) -> Path:
    document = {
        "id": pipeline,
        "operationDefs": {
            "gen": {
                "execution": {
                    "type": "streaming",
                    "source": {"type": "generator", "rate": rate, "seed": 7},
                    "sink": {"type": "file", "path": str(tmp / "gen.jsonl")},
                }
            }
        },
        "runtime": {"microBatchSize": 20, "maxBatchWait": "PT0.05S", **runtime},
        "checkpoint": {"interval": "PT0.5S"} if checkpoint is None else checkpoint,
    }
    path = tmp / f"{pipeline}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def read_checkpoint(pipeline_id: str) -> Any:
    from fluxion_flows.prefect.store import PrefectBlockCheckpointStore

    return await PrefectBlockCheckpointStore().load(pipeline_id)
