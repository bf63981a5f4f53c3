"""Fixtures of the fault-injection suite: real peers on loopback, shared per session where they can be.

- ``kafka_broker``: one Tansu broker for the crash and poison tests (tests
  isolate themselves by topic and group names, as in ``tests/kafka``).
- ``http_server``: a scripted loopback HTTP server per test; it lives in the
  test process, so it outlives every pipeline process a test kills.
- ``mongo_server``: one in-memory nx-27017 server for the crash matrix
  (tests isolate themselves by database; the outage test starts its own,
  file-backed, to restart it).
- ``eventhub_emulator``: one Event Hubs emulator (in this process, on a
  thread); ``new_hub(partitions)`` makes a hub no other test uses.
- ``cli_env`` (in ``tests/conftest.py``): the environment for pipeline subprocesses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.eventhub_emulator import EventHubEmulator
from tests.support.http_server import ScriptedHttpServer
from tests.support.kafka_broker import TansuBroker, running_broker
from tests.support.mongo_server import MongoServer, running_mongo

ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    with running_broker() as broker:
        yield broker


@pytest.fixture
def new_topic(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """A topic named after this test: ``new_topic(partitions=4)``."""

    def create(partitions: int = 1) -> str:
        base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:50]
        return kafka_broker.create_topic(f"chaos-{base}-{next(_counter)}", partitions)

    return create


@pytest.fixture
def http_server() -> Iterator[ScriptedHttpServer]:
    with ScriptedHttpServer() as server:
        yield server


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    with running_mongo(in_memory=True) as server:
        yield server


@pytest.fixture(scope="session")
def eventhub_emulator() -> Iterator[EventHubEmulator]:
    with EventHubEmulator() as emulator:
        yield emulator


@pytest.fixture
def new_hub(eventhub_emulator: EventHubEmulator) -> Callable[..., str]:
    """A hub no other test uses: ``new_hub(partitions=4)`` returns its name."""

    def create(partitions: int = 4) -> str:
        name = f"chaos{next(_counter)}"
        eventhub_emulator.add_hub(name, partitions)
        return name

    return create
