"""Runs one manifest with the HTTP sink to the end of its source (used as a subprocess by crash tests).

The ``http`` provider is passed to the registry explicitly, so this works
whether or not the entry point is installed yet.

    python -m tests.http.replay_runner MANIFEST.json
"""

from __future__ import annotations

import asyncio
import sys

from fluxion_flows.connectors.http import HttpSinkProvider
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import ProviderRegistry


async def main(manifest: str) -> None:
    pipeline = Pipeline.from_manifest(manifest, registry=ProviderRegistry(extra=[HttpSinkProvider()]))
    executor = await pipeline.executor()
    result = await executor.run()
    print(result.ended_by, result.metrics["documentsOut"], flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
