"""Crash matrix: each pair survives 20 SIGKILLs at seeded random moments with nothing lost.

The seed is fixed so a failure can be replayed; set ``FLUXION_CHAOS_SEED`` to
explore other kill schedules. The seed and every kill point are printed (and
repeated in any failure message). Adding a pair: a ``CrashTarget`` in
``targets.py`` and one more entry in ``PAIRS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import CrashHarness, CrashTarget
from tests.chaos.targets import FileToFile, KafkaToHttp

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


PAIRS: dict[str, tuple[Factory, int]] = {
    # pair: (target factory, records fed before each run: enough that a run is killed mid-stream)
    "file-file": (file_to_file, 4000),
    "kafka-http": (kafka_to_http, 3000),
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
