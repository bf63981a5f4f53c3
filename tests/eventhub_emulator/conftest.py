"""Fixtures for the emulator's own tests: one emulator per session, a fresh hub per test.

Giving every test its own hub keeps the tests independent of each other and of their
order while paying the emulator's start-up once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

from tests.support.eventhub_emulator import EventHubEmulator

_hub_numbers = itertools.count()


@pytest.fixture(scope="session")
def emulator() -> Iterator[EventHubEmulator]:
    """The emulator, started once for the session."""
    with EventHubEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def no_emulator_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test if the emulator logged an error while handling a connection.

    The emulator logs instead of raising inside its event loop, so without this an
    internal bug could hide behind an SDK retry.
    """
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
    """Create a hub with a name no other test uses; returns the name."""

    def make(partitions: int = 4) -> str:
        name = f"hub{next(_hub_numbers)}"
        emulator.add_hub(name, partitions)
        return name

    return make


@pytest.fixture
def hub(make_hub: Callable[[int], str]) -> str:
    """A fresh hub with four partitions."""
    return make_hub(4)


@pytest.fixture
async def producer(emulator: EventHubEmulator, hub: str) -> AsyncIterator[EventHubProducerClient]:
    """An async producer for ``hub``."""
    client = EventHubProducerClient.from_connection_string(emulator.connection_string(hub))
    async with client:
        yield client


@pytest.fixture
async def consumer(emulator: EventHubEmulator, hub: str) -> AsyncIterator[EventHubConsumerClient]:
    """An async consumer of ``hub`` in the ``$Default`` group."""
    client = EventHubConsumerClient.from_connection_string(
        emulator.connection_string(hub), consumer_group="$Default"
    )
    yield client
    with contextlib.suppress(Exception):
        await client.close()
