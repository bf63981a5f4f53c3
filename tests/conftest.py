"""Settings shared by every test package: one local Prefect API for the whole session.

``fluxion run`` runs a pipeline as a Prefect flow; without ``PREFECT_API_URL``
each process would start (and pay several seconds for) a private local
Prefect API. Many tests run pipelines as subprocesses (crash tests kill and
restart them dozens of times), so the session starts one API before
collection and every child inherits its URL. ``PREFECT_HOME`` points at a
session temp directory, so tests never touch the user's profile or database.
Tests of the Prefect integration itself use ``prefect_test_harness`` and pass
its URL explicitly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_session: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    home = tempfile.mkdtemp(prefix="fluxion-test-prefect-")
    _session["home"] = home
    os.environ["PREFECT_HOME"] = home
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if os.environ.get("PREFECT_API_URL"):
        return
    from fluxion_flows.prefect.server import EmbeddedServer

    # `make test` runs two pytest sessions at once (the soak beside the suite). Starting their
    # servers one after the other keeps them from choosing the same free port: a server whose
    # port is taken would otherwise answer its health check with the other session's server.
    with open(Path(tempfile.gettempdir()) / "fluxion-test-prefect-api.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        server = EmbeddedServer()
        server.start()
        server.wait_ready()
    _session["server"] = server
    os.environ["PREFECT_API_URL"] = server.api_url


def pytest_unconfigure(config: pytest.Config) -> None:
    server = _session.pop("server", None)
    if server is not None:
        server.stop()  # type: ignore[attr-defined]
        os.environ.pop("PREFECT_API_URL", None)
    home = _session.pop("home", None)
    if isinstance(home, str):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def cli_env() -> Iterator[dict[str, str]]:
    """Environment for pipeline subprocesses: the repository importable, plain output."""
    yield {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "100000",
        "NO_COLOR": "1",
    }
