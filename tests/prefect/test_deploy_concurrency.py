"""``fluxion deploy --concurrency N``: the limit as the Prefect API stores it, and the refusals.

The Kafka manifest is only validated by ``deploy`` (nothing connects to the
broker), so no broker is needed here; the deployment is read back from the
session's Prefect test API.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from tests.prefect.conftest import PYTHON, file_manifest

FLUXION = [PYTHON, "-m", "fluxion_flows"]


def kafka_manifest(directory: Path) -> Path:
    """A consumer-group source (Kafka): the only kind whose deployment may run in parallel."""
    execution = {
        "type": "streaming",
        "source": {"type": "kafka", "bootstrapServers": "127.0.0.1:9", "topic": "orders"},
        "sink": {"type": "file", "path": str(directory / "out.jsonl")},
    }
    path = directory / "grouped.yaml"
    document = {"id": "grouped", "operationDefs": {"orders": {"execution": execution}}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def deploy(api_env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLUXION, "deploy", *args],
        env=api_env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def read_deployment(name: str) -> Any:
    async with get_client() as client:
        found = await client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    return found[0] if found else None


def stored_limit(deployment: Any) -> int | None:
    """The deployment concurrency limit (newer APIs return it as a global concurrency limit)."""
    if not hasattr(deployment, "global_concurrency_limit"):
        return deployment.concurrency_limit  # type: ignore[no-any-return]
    limit = deployment.global_concurrency_limit
    return limit.limit if limit is not None else None


def test_concurrency_sets_the_deployment_limit(tmp_path: Path, api_env: dict[str, str]) -> None:
    path = kafka_manifest(tmp_path)
    run = deploy(api_env, tmp_path, str(path), "--name", "cli-concurrency", "--concurrency", "3")
    assert run.returncode == 0, run.stderr
    assert "concurrency limit 3 (consumer group)" in run.stdout
    deployment = asyncio.run(read_deployment("cli-concurrency"))
    assert deployment is not None
    assert stored_limit(deployment) == 3


def test_without_concurrency_a_consumer_group_deployment_has_no_limit(
    tmp_path: Path, api_env: dict[str, str]
) -> None:
    path = kafka_manifest(tmp_path)
    run = deploy(api_env, tmp_path, str(path), "--name", "cli-no-concurrency")
    assert run.returncode == 0, run.stderr
    assert "concurrency limit none (consumer group)" in run.stdout
    deployment = asyncio.run(read_deployment("cli-no-concurrency"))
    assert deployment is not None
    assert stored_limit(deployment) is None


def test_concurrency_below_one_is_refused_before_deploying(tmp_path: Path, api_env: dict[str, str]) -> None:
    path = kafka_manifest(tmp_path)
    for value in ("0", "-2"):
        run = deploy(api_env, tmp_path, str(path), "--name", "cli-zero", "--concurrency", value)
        assert run.returncode == 2, run.stdout
        assert f"--concurrency must be at least 1 (found {value})" in run.stderr
        assert "Traceback" not in run.stderr
    assert asyncio.run(read_deployment("cli-zero")) is None


def test_concurrency_above_one_is_refused_for_a_single_consumer_source(
    tmp_path: Path, api_env: dict[str, str]
) -> None:
    (tmp_path / "in.jsonl").write_text("")
    path = file_manifest(tmp_path, "single")
    run = deploy(api_env, tmp_path, str(path), "--name", "cli-single", "--concurrency", "2")
    assert run.returncode == 2, run.stdout
    assert "single.orders needs a single consumer: its concurrency limit is 1" in run.stderr
    assert asyncio.run(read_deployment("cli-single")) is None
