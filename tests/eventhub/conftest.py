"""One Event Hubs emulator for the connector tests, and a fresh hub per use.

The emulator runs in this process on a background thread; pipeline
subprocesses connect to it over TCP like to any namespace. Every test makes
its own hubs (unique names), so tests are independent of each other and of
their order while paying the emulator start once.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.eventhub_emulator import EventHubEmulator

_numbers = itertools.count()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EventHubEmulator]:
    with EventHubEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def no_emulator_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An emulator error (logged on its thread, never raised) fails the test that caused it."""
    yield
    errors = [
        record.getMessage()
        for phase in ("setup", "call")
        for record in caplog.get_records(phase)
        if record.name.startswith("tests.support.eventhub_emulator") and record.levelno >= logging.ERROR
    ]
    assert not errors, errors


@pytest.fixture
def make_hub(emulator: EventHubEmulator) -> Callable[[int], str]:
    """Create a hub no other test uses: ``make_hub(4)`` returns its name."""

    def make(partitions: int = 4) -> str:
        name = f"ehc{os.getpid()}x{next(_numbers)}"
        emulator.add_hub(name, partitions)
        return name

    return make


class _PrefectApi:
    """One Prefect API for every ``fluxion run`` subprocess of the session (see ``pipeline.py``)."""

    def __init__(self) -> None:
        self.server: Any = None
        self.home = tempfile.mkdtemp(prefix="fluxion-eventhub-prefect-")

    def start(self) -> None:
        if self.server is not None:
            return
        try:
            from fluxion_flows.prefect.server import EmbeddedServer
        except ImportError:  # no Prefect layer: each run uses whatever it defaults to
            return
        previous = os.environ.get("PREFECT_HOME")
        os.environ["PREFECT_HOME"] = self.home
        try:
            self.server = EmbeddedServer()
            self.server.start()
        finally:
            if previous is None:
                os.environ.pop("PREFECT_HOME", None)
            else:
                os.environ["PREFECT_HOME"] = previous

    def env(self) -> dict[str, str]:
        if self.server is None:
            return {}
        self.server.wait_ready()
        return {"PREFECT_API_URL": self.server.api_url, "PREFECT_HOME": self.home}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.home, ignore_errors=True)


_PREFECT = _PrefectApi()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the Prefect API in the background as soon as a pipeline test is selected."""
    if any(item.nodeid.startswith("tests/eventhub/test_pipeline") for item in items):
        _PREFECT.start()


@pytest.fixture(scope="session")
def run_env() -> Iterator[dict[str, str]]:
    """Environment for ``fluxion run`` subprocesses."""
    _PREFECT.start()
    yield _PREFECT.env()
    _PREFECT.stop()
