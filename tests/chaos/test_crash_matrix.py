"""Crash matrix: each pair survives 20 SIGKILLs at seeded random moments with nothing lost.

The seed is fixed so a failure can be replayed; set ``FLUXION_CHAOS_SEED`` to
explore other kill schedules. The seed and every kill point are printed (and
repeated in any failure message). Adding a pair: a ``CrashTarget`` in
``targets.py`` and one more entry in ``PAIRS``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import CrashHarness, CrashTarget
from tests.chaos.targets import (
    BackgroundLoop,
    EventHubToHttp,
    FileToFile,
    KafkaToHttp,
    KafkaToMongo,
    MongoToKafka,
)

SEED = int(os.environ.get("FLUXION_CHAOS_SEED", "20261201"))
KILLS = int(os.environ.get("FLUXION_CHAOS_KILLS", "20"))

Factory = Callable[[pytest.FixtureRequest, Path], CrashTarget]


def file_to_file(request: pytest.FixtureRequest, tmp: Path) -> CrashTarget:
    return FileToFile(tmp)


def kafka_to_http(request: pytest.FixtureRequest, tmp: Path) -> CrashTarget:
    new_topic = request.getfixturevalue("new_topic")
    server = request.getfixturevalue("http_server")
    broker = request.getfixturevalue("kafka_broker")
    return KafkaToHttp(tmp, broker.bootstrap, new_topic(partitions=4), server)


def kafka_to_mongo(request: pytest.FixtureRequest, tmp: Path) -> CrashTarget:
    broker = request.getfixturevalue("kafka_broker")
    mongo = request.getfixturevalue("mongo_server")
    topic = request.getfixturevalue("new_topic")(partitions=4)
    return closing(request, KafkaToMongo(tmp, broker.bootstrap, topic, mongo.uri, database()))


def mongo_to_kafka(request: pytest.FixtureRequest, tmp: Path) -> CrashTarget:
    broker = request.getfixturevalue("kafka_broker")
    mongo = request.getfixturevalue("mongo_server")
    topic = request.getfixturevalue("new_topic")(partitions=4)
    loop = request.getfixturevalue("background_loop")
    return closing(request, MongoToKafka(tmp, mongo.uri, database(), broker.bootstrap, topic, loop))


def eventhub_to_http(request: pytest.FixtureRequest, tmp: Path) -> CrashTarget:
    emulator = request.getfixturevalue("eventhub_emulator")
    hub = request.getfixturevalue("new_hub")(partitions=4)
    server = request.getfixturevalue("http_server")
    loop = request.getfixturevalue("background_loop")
    return closing(request, EventHubToHttp(tmp, emulator, hub, server, loop))


def database() -> str:
    return f"chaos_{uuid.uuid4().hex[:10]}"


def closing(
    request: pytest.FixtureRequest, target: KafkaToMongo | MongoToKafka | EventHubToHttp
) -> CrashTarget:
    """Close the target's own clients when the test ends (before the session's peers stop)."""
    request.addfinalizer(target.close)
    return target


@pytest.fixture
def background_loop() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


PAIRS: dict[str, tuple[Factory, int]] = {
    # pair: (target factory, records fed before each run: enough that a run is killed mid-stream)
    "file-file": (file_to_file, 4000),
    "kafka-http": (kafka_to_http, 3000),
    "kafka-mongo": (kafka_to_mongo, 600),
    "mongo-kafka": (mongo_to_kafka, 600),
    "eventhub-http": (eventhub_to_http, 600),
}


@pytest.mark.slow
@pytest.mark.parametrize("pair", list(PAIRS))
def test_sigkill_at_random_moments_loses_nothing(
    pair: str, request: pytest.FixtureRequest, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    factory, feed = PAIRS[pair]
    target = factory(request, tmp_path)
    harness = CrashHarness(target, cli_env, tmp_path / "runs.log", seed=SEED, kills=KILLS, feed_per_run=feed)
    report = harness.run()
    assert report.kills == KILLS
    assert report.records == feed * len(report.runs)
