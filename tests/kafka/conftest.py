"""A Tansu broker for the whole Kafka test session, and per-test topics.

One broker serves every test (it starts in milliseconds but rebalances and
group state are per group, so tests isolate themselves by topic and group
names, never by order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from tests.support.kafka_broker import TansuBroker, running_broker

_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    with running_broker() as broker:
        yield broker


@pytest.fixture
def bootstrap(kafka_broker: TansuBroker) -> str:
    return kafka_broker.bootstrap


@pytest.fixture
def new_topic(kafka_broker: TansuBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic with a name unique to this test: ``new_topic(partitions=4)``."""

    def create(partitions: int = 1, suffix: str = "") -> str:
        base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
        name = f"{base}-{next(_counter)}{suffix}"
        return kafka_broker.create_topic(name, partitions)

    return create
