"""Real processes against the Prefect test API: cancellation through a served deployment, SIGKILL,
``fluxion deploy`` / ``automation``, ``prefect block register`` and ``prefect deploy --all``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.exceptions import ObjectAlreadyExists
from prefect.states import Cancelling

from fluxion_flows.prefect.deploy import deploy_manifest
from fluxion_flows.prefect.flow import run_manifest
from fluxion_flows.spi import RunMode
from tests.prefect.conftest import (
    PYTHON,
    REPO,
    async_wait_for,
    file_manifest,
    generator_manifest,
    lines,
    read_checkpoint,
)

FLUXION = [PYTHON, "-m", "fluxion_flows"]
RECORDS = 150_000


async def _deployment(name: str) -> Any:
    async with get_client() as client:
        found = await client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
    return found[0] if found else None


async def _state(flow_run_id: Any) -> Any:
    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).state


def _limit(deployment: Any) -> int | None:
    """The deployment concurrency limit (newer APIs return it as a global concurrency limit)."""
    limit = getattr(deployment, "global_concurrency_limit", None)
    return limit.limit if limit is not None else deployment.concurrency_limit


def _stop(process: subprocess.Popen[Any]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stderr.read().decode(errors="replace")[-30000:] if process.stderr else ""


async def test_cancelling_through_the_api_stops_gracefully_within_10_s(
    tmp_path: Path, api_env: dict[str, str]
) -> None:
    path = generator_manifest(tmp_path, "cancel", rate=300)
    env = {**api_env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    server = subprocess.Popen(  # noqa: ASYNC220 - the served process outlives this await point
        [*FLUXION, "serve", str(path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deployment = await async_wait_for(
            lambda: _deployment("cancel-gen-continuous"), "the served deployment", 60
        )
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(deployment.id)
        out = tmp_path / "gen.jsonl"
        await async_wait_for(_grown(out, 100), "documents flowing", 60)
        async with get_client() as client:
            await client.set_flow_run_state(flow_run.id, Cancelling(message="test"), force=True)
        cancelled_at = time.monotonic()
        final = await async_wait_for(_final_state(flow_run.id), "the run to end", deadline=10)
        elapsed = time.monotonic() - cancelled_at
    finally:
        stderr = _stop(server)
    print(stderr)
    assert final.is_cancelled(), f"{final} after {elapsed:.1f}s\n{stderr}"
    delivered = lines(out)
    checkpoint = await read_checkpoint("cancel.gen")
    assert checkpoint.positions == {"generator": len(delivered)}, stderr
    assert [d["orderId"] for d in delivered] == list(range(len(delivered)))


def _grown(path: Path, count: int) -> Any:
    async def check() -> bool:
        return len(lines(path)) >= count

    return check


def _bytes(path: Path, size: int) -> Any:
    async def check() -> bool:
        return path.exists() and path.stat().st_size >= size  # noqa: ASYNC240 - a stat, not I/O on a file

    return check


def _final_state(flow_run_id: Any) -> Any:
    async def check() -> Any:
        state = await _state(flow_run_id)
        return state if state is not None and state.is_final() else None

    return check


async def test_sigkill_mid_stream_loses_nothing(tmp_path: Path, api_env: dict[str, str]) -> None:
    source = tmp_path / "in.jsonl"
    with source.open("w") as handle:
        for n in range(RECORDS):
            handle.write(f'{{"n": {n}, "status": "PAID", "pad": "{"x" * 40}"}}\n')
    path = file_manifest(tmp_path, "crash", runtime={"microBatchSize": 50, "maxBatchWait": "PT0.01S"})
    out = tmp_path / "out.jsonl"
    script = (
        "import asyncio; from fluxion_flows.prefect.flow import run_manifest; "
        f"asyncio.run(run_manifest({str(path)!r}))"
    )
    process = subprocess.Popen(  # noqa: ASYNC220 - killed below, never awaited
        [PYTHON, "-c", script], env=api_env, cwd=tmp_path, stderr=subprocess.DEVNULL
    )
    try:
        await async_wait_for(_bytes(out, 300_000), "output before the kill", 90)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_with = len(lines(out))
    checkpointed = (await read_checkpoint("crash.orders")).positions.get(str(source), 0)
    assert killed_with < RECORDS, "the run finished before it could be killed; make the input larger"

    state = await run_manifest(str(path), mode="drain", return_state=True)
    assert state.is_completed(), state
    documents = lines(out)
    assert {d["n"] for d in documents} == set(range(RECORDS)), "records lost"
    seen: set[int] = set()
    for document in documents:
        if document["n"] in seen:
            assert document["_meta"]["offset"] > checkpointed, "re-delivered below the checkpoint"
        seen.add(document["n"])


async def test_fluxion_deploy_creates_a_scheduled_single_consumer_deployment(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    path = file_manifest(tmp_path, "deployed")
    deployment_id, built = await deploy_manifest(
        path, name="deployed-drain", mode=RunMode.DRAIN, cron="*/5 * * * *"
    )
    async with get_client() as client:
        deployment = await client.read_deployment(deployment_id)
    assert built.pipeline_id == "deployed.orders" and built.exclusive
    assert _limit(deployment) == 1
    assert deployment.parameters == {"manifest": str(path), "operation": "orders", "mode": "drain"}
    assert deployment.schedules[0].schedule.cron == "*/5 * * * *"
    assert deployment.entrypoint == "fluxion_flows.prefect.flow:run_manifest"
    assert "startFrom" in deployment.parameter_openapi_schema["properties"]


def test_cli_deploy_automation_and_block_register(tmp_path: Path, api_env: dict[str, str]) -> None:
    (tmp_path / "in.jsonl").write_text("")
    path = file_manifest(tmp_path, "clideploy")
    run = subprocess.run(
        [*FLUXION, "deploy", str(path), "--name", "cli-deploy", "--interval", "600", "--mode", "drain"],
        env=api_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "concurrency limit 1" in run.stdout
    auto = subprocess.run(
        [*FLUXION, "automation", "create", "--within", "60"],
        env=api_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert auto.returncode == 0, auto.stderr
    register = subprocess.run(
        [str(Path(PYTHON).parent / "prefect"), "block", "register", "-m", "fluxion_flows.prefect.blocks"],
        env=api_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert register.returncode == 0, register.stdout + register.stderr
    assert "Fluxion Checkpoint" in register.stdout and "Fluxion Connection" in register.stdout

    async def check() -> None:
        from fluxion_flows.prefect.automation import DEFAULT_NAME

        async with get_client() as client:
            automations = await client.read_automations_by_name(DEFAULT_NAME)
        trigger = automations[0].trigger
        assert trigger.posture == "Proactive" and trigger.expect >= {"fluxion.pipeline.heartbeat"}
        assert trigger.match.model_dump()["prefect.resource.id"] == "fluxion.pipeline.*"

    asyncio.run(check())


def test_prefect_deploy_all_accepts_the_deployments_file(api_env: dict[str, str]) -> None:
    async def pool() -> None:
        async with get_client() as client:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_pool(WorkPoolCreate(name="fluxion-local", type="process"))

    asyncio.run(pool())
    result = subprocess.run(
        [str(Path(PYTHON).parent / "prefect"), "--no-prompt", "deploy", "--all",
         "--prefect-file", "deployments/prefect.yaml"],
        env=api_env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("orders-batch-drain", "orders-stream-continuous", "quickstart-drain"):
        deployment = asyncio.run(_deployment(name))
        assert deployment is not None and _limit(deployment) == 1, name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_fluxion_run_uses_the_configured_api(tmp_path: Path, api_env: dict[str, str]) -> None:
    (tmp_path / "in.jsonl").write_text('{"n": 1, "status": "PAID"}\n')
    path = file_manifest(tmp_path, "clirun")
    result = subprocess.run(
        [*FLUXION, "run", str(path), "--mode", "drain", "-q"],
        env=api_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    checkpoint = asyncio.run(read_checkpoint("clirun.orders"))
    assert checkpoint is not None and checkpoint.positions  # the block store of the configured API
