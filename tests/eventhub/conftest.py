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
from collections.abc import Callable, Iterator

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


@pytest.fixture(scope="session")
def run_env() -> dict[str, str]:
    """Extra environment for ``fluxion run`` subprocesses (the Prefect API is set in tests/conftest.py)."""
    return {}
