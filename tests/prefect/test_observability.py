"""Secrets stay out of Prefect; a 60-second continuous run fits the Hobby rate limits several times over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.blocks.system import Secret as SecretBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter
from prefect.settings import PREFECT_API_URL

from fluxion_flows.prefect.flow import run_manifest
from tests.prefect.conftest import async_wait_for, file_manifest, generator_manifest, write_orders
from tests.support.http_server import ScriptedHttpServer

pytestmark = pytest.mark.usefixtures("prefect_api")
TOKEN = "fx-very-secret-token-4711"
HOBBY_CALLS, HOBBY_LOGS_EVENTS = 625, 2000


async def _logs(flow_run_id: Any) -> list[str]:
    async with get_client() as client:
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
    return [log.message for log in logs]


async def _events(flow_run_id: Any) -> Any:
    async with get_client() as client:
        return await client.read_events(
            EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"])), limit=50
        )


async def test_secrets_from_prefect_blocks_never_reach_logs_events_or_artifacts(tmp_path: Path) -> None:
    await SecretBlock(value=TOKEN).asave("fluxion-test-token", overwrite=True)
    write_orders(tmp_path / "in.jsonl", 10)
    with ScriptedHttpServer() as server:
        path = file_manifest(
            tmp_path,
            "secret-e2e",
            sink={
                "type": "http",
                "endpoint": server.url + "/hook",
                "headers": {"Authorization": "Bearer {{ prefect.blocks.secret.fluxion-test-token }}"},
            },
        )
        state = await run_manifest(str(path), mode="drain", return_state=True)
        assert state.is_completed(), state
        assert server.received("/hook")[0].header("authorization") == f"Bearer {TOKEN}"
    flow_run_id = state.state_details.flow_run_id
    await async_wait_for(lambda: _has_fluxion_events(flow_run_id), "events to be persisted")
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        flow_run = await client.read_flow_run(flow_run_id)
    seen = " ".join(await _logs(flow_run_id))
    seen += " ".join(e.model_dump_json() for e in (await _events(flow_run_id)).events)
    seen += " ".join(str(a.data) + str(a.description) for a in artifacts)
    seen += flow_run.model_dump_json()
    assert "Bearer" in seen or "secret-e2e" in seen  # we did look at real content
    assert TOKEN not in seen


async def _has_fluxion_events(flow_run_id: Any) -> bool:
    return any(e.event == "fluxion.pipeline.stopped" for e in (await _events(flow_run_id)).events)


@pytest.mark.slow
async def test_a_60_second_continuous_run_stays_within_hobby_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    api = str(PREFECT_API_URL.value())
    original = httpx.AsyncClient.send

    async def counting(self: httpx.AsyncClient, request: httpx.Request, *args: Any, **kwargs: Any) -> Any:
        if str(request.url).startswith(api):
            calls.append(f"{request.method} {request.url.path}")
        return await original(self, request, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counting)
    # default metrics (5 s) and checkpoint (5 s) intervals
    path = generator_manifest(tmp_path, "hobby", rate=1000, checkpoint={}, metricsInterval="PT5S")
    state = await run_manifest(str(path), maxDuration=60, return_state=True)
    assert state.is_completed(), state
    made = len(calls)  # what the run made (the checks below make calls of their own)
    flow_run_id = state.state_details.flow_run_id
    await async_wait_for(lambda: _has_fluxion_events(flow_run_id), "events to be persisted")
    page = await _events(flow_run_id)
    logs = await _logs(flow_run_id)
    events, minutes = page.total, 1.0
    print(
        f"\nhobby: {made} API calls, {len(logs)} logs, {events} events in 60 s; "
        f"by kind: {sorted({c: calls.count(c) for c in set(calls)}.items(), key=lambda x: -x[1])[:8]}"
    )
    pipelines = 4
    assert made / minutes <= HOBBY_CALLS / pipelines
    assert (len(logs) + events) / minutes <= HOBBY_LOGS_EVENTS / pipelines
