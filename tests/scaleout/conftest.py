"""Peers of the scale-out test: a fresh PostgreSQL database, a Prefect server on it, a Kafka broker.

The Prefect server is ``prefect server start`` (API and services, UI off) in
its own process group, backed by a database created for this test on the
PostgreSQL at 127.0.0.1:5432 (trust auth, user ``postgres``) and dropped
afterwards, so nothing is shared with other tests or runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.kafka_broker import TansuBroker, free_port, running_broker

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    with running_broker() as broker:
        yield broker


@pytest.fixture
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty database; yields its SQLAlchemy asyncpg URL and drops it at the end."""
    name = f"fluxion_scaleout_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def stop_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group ``process`` leads, then SIGKILL it if it outlives ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def prefect_server(postgres_database: str, tmp_path: Path) -> Iterator[str]:
    """``prefect server start`` on PostgreSQL; yields its API URL."""
    port = free_port()
    home = tmp_path / "prefect-server-home"
    home.mkdir()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres_database,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    }
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "prefect-server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
         "--no-ui", "--analytics-off"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert server.poll() is None, (tmp_path / "prefect-server.log").read_text()[-3000:]
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{api}/health").status_code == 200:
                        break
                assert time.monotonic() < deadline, "the Prefect server did not answer within 120 s"
                time.sleep(0.2)
        yield api
    finally:
        stop_group(server)
        log.close()
