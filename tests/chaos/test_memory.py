"""Memory stays bounded when the sink is 10x slower than the source, for 1M documents.

The pipeline runs in a subprocess (``tests/chaos/memory_runner.py``) so the
test process's own memory does not count; it reports RSS sampled every
20 ms. Peak RSS must stay within 1.2x of the steady-state RSS (the median
once a tenth of the documents were delivered, i.e. after the queues filled)
and under 300 MB. ``FLUXION_MEMORY_DOCUMENTS`` changes the count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = int(os.environ.get("FLUXION_MEMORY_DOCUMENTS", "1000000"))
MB = 1024 * 1024


@pytest.mark.slow
def test_slow_sink_keeps_rss_flat_over_a_million_documents() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.memory_runner", str(DOCUMENTS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = orjson.loads(done.stdout.splitlines()[-1])
    peak, steady = result["rssPeak"], result["rssSteady"]
    print(
        f"memory: {result['documents']} documents in {result['seconds']}s (source {result['sourceRate']}/s, "
        f"sink {result['sinkRate']}/s); RSS before {result['rssBefore'] / MB:.1f} MB, steady "
        f"{steady / MB:.1f} MB, peak {peak / MB:.1f} MB ({peak / steady:.3f}x), {result['samples']} samples"
    )
    assert result["documents"] == DOCUMENTS
    assert result["sourceRate"] >= 10 * result["sinkRate"] * 0.9, "the sink was not ~10x slower"
    assert peak <= 1.2 * steady, f"peak {peak / MB:.1f} MB > 1.2 x steady {steady / MB:.1f} MB"
    assert peak < 300 * MB
