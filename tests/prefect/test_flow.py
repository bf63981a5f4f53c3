"""The flow end to end against the Prefect test API: drain, resume, replay, fence, retries, parameters."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from pydantic import ValidationError

from fluxion_flows.checkpoint import Checkpoint, StaleGenerationError
from fluxion_flows.prefect import names
from fluxion_flows.prefect.flow import run_manifest
from fluxion_flows.prefect.parameters import RunParameters, StartFromParameter
from fluxion_flows.prefect.store import PrefectBlockCheckpointStore
from tests.prefect.conftest import (
    async_wait_for,
    file_manifest,
    generator_manifest,
    lines,
    read_checkpoint,
    write_orders,
)
from tests.support.http_server import Reply, ScriptedHttpServer

pytestmark = pytest.mark.usefixtures("prefect_api")


async def drain(path: Path, **parameters: Any) -> Any:
    return await run_manifest(str(path), mode="drain", return_state=True, **parameters)


async def events_of(flow_run_id: Any, event: str | None = None) -> list[Any]:
    async with get_client() as client:
        page = await client.read_events(
            EventFilter(
                any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                event=EventNameFilter(name=[event]) if event else None,
            ),
            limit=50,
        )
    return [e for e in page.events if e.event.startswith("fluxion.")]


# ----------------------------------------------------------------- drain and resume
async def test_drain_run_completes_with_output_checkpoint_block_artifacts_and_events(tmp_path: Path) -> None:
    write_orders(tmp_path / "in.jsonl", 40)
    path = file_manifest(tmp_path, "drain-e2e")
    state = await drain(path)
    assert state.is_completed(), state
    assert [d["n"] for d in lines(tmp_path / "out.jsonl")] == list(range(1, 40, 2))

    size = (tmp_path / "in.jsonl").stat().st_size
    checkpoint = await read_checkpoint("drain-e2e.orders")
    assert checkpoint.positions == {str(tmp_path / "in.jsonl"): size}
    assert checkpoint.generation == 1 and checkpoint.committed_at is not None

    flow_run_id = state.state_details.flow_run_id
    async with get_client() as client:
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
        keys = [names.artifact_key("drain-e2e.orders", w) for w in ("metrics", "progress")]
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )
    assert sorted(t.name.rsplit("-", 1)[0] for t in tasks) == [
        "create-sink-chain", "create-source", "load-manifest", "run-pipeline",
    ]  # fmt: skip
    by_type = {a.type: a for a in artifacts if a.flow_run_id == flow_run_id}
    assert set(by_type) == {"table", "progress"}
    assert by_type["progress"].data == 100.0
    rows = by_type["table"].data if isinstance(by_type["table"].data, list) else None
    assert rows is None or any(r["kind"] == "stage" and r["out"] == 20 for r in rows)

    wanted = {names.EVENT_STARTED, names.EVENT_CHECKPOINTED, names.EVENT_STOPPED}
    found = await async_wait_for(
        lambda: _event_names(flow_run_id, wanted), "fluxion events to be persisted", deadline=30
    )
    assert found >= wanted
    event = (await events_of(flow_run_id, names.EVENT_STOPPED))[0]
    assert event.resource.id == "fluxion.pipeline.drain-e2e.orders"
    assert any(r.id == f"prefect.flow-run.{flow_run_id}" and r.role == "flow-run" for r in event.related)
    assert event.payload["metrics"]["documentsOut"] == 20


async def _event_names(flow_run_id: Any, wanted: set[str]) -> set[str] | None:
    found = {e.event for e in await events_of(flow_run_id)}
    return found if wanted <= found else None


async def test_second_run_resumes_from_the_block(tmp_path: Path) -> None:
    write_orders(tmp_path / "in.jsonl", 20)
    path = file_manifest(tmp_path, "resume-e2e")
    assert (await drain(path)).is_completed()
    write_orders(tmp_path / "in.jsonl", 10, start=20)
    state = await drain(path)
    assert state.is_completed()
    assert [d["n"] for d in lines(tmp_path / "out.jsonl")] == list(range(1, 30, 2))  # no duplicates
    assert (await state.aresult())["metrics"]["documentsIn"] == 10
    checkpoint = await read_checkpoint("resume-e2e.orders")
    assert checkpoint.generation == 2
    assert checkpoint.positions == {str(tmp_path / "in.jsonl"): (tmp_path / "in.jsonl").stat().st_size}


async def test_earliest_replays_only_with_confirmation(tmp_path: Path) -> None:
    write_orders(tmp_path / "in.jsonl", 10)
    path = file_manifest(tmp_path, "replay-e2e")
    assert (await drain(path)).is_completed()

    refused = await drain(path, startFrom={"kind": "earliest"})
    assert refused.is_failed()
    assert "confirmReplay" in str(refused.message) + str(await refused.aresult(raise_on_failure=False))
    assert len(lines(tmp_path / "out.jsonl")) == 5

    replay = await drain(path, startFrom={"kind": "earliest", "confirmReplay": True})
    assert replay.is_completed()
    assert [d["n"] for d in lines(tmp_path / "out.jsonl")] == [1, 3, 5, 7, 9] * 2


def set_stages(path: Path, stages: list[dict[str, Any]]) -> None:
    document = yaml.safe_load(path.read_text())
    document["operationDefs"]["orders"]["execution"]["process"]["stages"] = stages
    path.write_text(yaml.safe_dump(document, sort_keys=False))


async def test_a_replay_recomputes_stage_state_and_a_changed_stateful_stage_is_refused(
    tmp_path: Path,
) -> None:
    write_orders(tmp_path / "in.jsonl", 10)
    path = file_manifest(tmp_path, "state-e2e")
    paid = {"$match": {"status": "PAID"}}
    set_stages(path, [paid, {"$group": {"_id": None, "paid": {"$sum": 1}}}])
    assert (await drain(path)).is_completed()
    assert lines(tmp_path / "out.jsonl")[-1] == {"_id": None, "paid": 5}

    replay = await drain(path, startFrom={"kind": "earliest", "confirmReplay": True})
    assert replay.is_completed()
    assert lines(tmp_path / "out.jsonl")[-1] == {"_id": None, "paid": 5}  # recomputed, not 10

    set_stages(path, [paid, {"$group": {"_id": None, "amount": {"$sum": "$n"}}}])
    refused = await drain(path)
    assert refused.is_failed()
    message = str(await refused.aresult(raise_on_failure=False))
    assert "`process[1]` ($group: " in message and "--start-from earliest" in message
    async with get_client() as client:
        attempts = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[refused.state_details.flow_run_id])),
        )
    run_task = next(t for t in attempts if t.name.startswith("run-pipeline"))
    assert run_task.run_count == 1  # not retried: a retry cannot fix the manifest


# ----------------------------------------------------------------- parameters
def test_parameters_validate() -> None:
    ok = RunParameters(manifest={"id": "x"}, mode="drain", startFrom={"kind": "latest"}, maxDocuments=5)
    assert ok.startFrom.to_start_from().kind == "latest"
    for bad in (
        {"manifest": "m.yaml", "mode": "sideways"},
        {"manifest": "m.yaml", "maxDocuments": 0},
        {"manifest": "m.yaml", "maxDuration": -1},
        {"manifest": " "},
        {"manifest": "m.yaml", "startFrom": {"kind": "timestamp"}},
        {"manifest": "m.yaml", "startFrom": {"kind": "positions"}},
        {"manifest": "m.yaml", "unknown": 1},
    ):
        with pytest.raises(ValidationError):
            RunParameters.model_validate(bad)
    stamp = StartFromParameter(kind="timestamp", timestamp="2026-01-01T00:00:00")
    assert stamp.to_start_from().timestamp == 1767225600.0


async def test_invalid_parameters_fail_the_flow_run_before_it_starts(tmp_path: Path) -> None:
    state = await run_manifest(str(tmp_path / "m.yaml"), mode="sideways", return_state=True)  # type: ignore[arg-type]
    assert state.is_failed()
    assert "mode" in str(state.message) + repr(await state.aresult(raise_on_failure=False))


def test_parameter_schema_is_a_form() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(run_manifest.fn).model_dump()
    assert list(schema["properties"])[:3] == ["manifest", "operation", "connections"]
    assert {"mode", "overrides", "startFrom", "maxDocuments", "maxDuration"} <= set(schema["properties"])
    assert schema["definitions"]["RunMode"]["enum"] == ["continuous", "drain"]
    assert "confirmReplay" in schema["definitions"]["StartFromParameter"]["properties"]


# ----------------------------------------------------------------- the generation fence
async def test_concurrent_claims_get_distinct_generations_and_the_older_cannot_commit() -> None:
    stores = [PrefectBlockCheckpointStore() for _ in range(4)]
    claims = await asyncio.gather(*(s.claim("fence-e2e.p") for s in stores))
    generations = sorted(c.generation for c in claims)
    assert generations == [1, 2, 3, 4]
    newest = max(range(4), key=lambda i: claims[i].generation)
    for index, (store, claim) in enumerate(zip(stores, claims, strict=True)):
        attempt = Checkpoint("fence-e2e.p", claim.generation, {"p": index})
        if index == newest:
            await store.save(attempt)
        else:
            with pytest.raises(StaleGenerationError):
                await store.save(attempt)
    assert (await read_checkpoint("fence-e2e.p")).positions == {"p": newest}


async def test_shared_claims_starting_together_on_a_new_pipeline_all_commit() -> None:
    """Runs of one consumer group, started at once before any checkpoint exists, join one generation."""
    stores = [PrefectBlockCheckpointStore() for _ in range(3)]
    claims = await asyncio.gather(*(s.claim("shared-start.p", shared=True) for s in stores))
    assert {c.generation for c in claims} == {1}
    # The race made explicit: a run has taken generation 1 but not yet written the checkpoint.
    block = names.checkpoint_block_name("shared-race.p")
    async with get_client() as client:
        await client.create_variable(VariableCreate(name=names.claim_marker_name(block, 1), value=1))
    assert (await PrefectBlockCheckpointStore().claim("shared-race.p", shared=True)).generation == 1
    for index, (store, claim) in enumerate(zip(stores, claims, strict=True)):
        await store.save(Checkpoint("shared-start.p", claim.generation, {f"partition-{index}": index}))
    stored = await read_checkpoint("shared-start.p")
    assert stored.positions == {"partition-0": 0, "partition-1": 1, "partition-2": 2}
    exclusive = await PrefectBlockCheckpointStore().claim("shared-start.p")
    assert exclusive.generation == 2  # an exclusive run still fences the whole group
    with pytest.raises(StaleGenerationError):
        await stores[0].save(Checkpoint("shared-start.p", 1, {"partition-0": 5}))


async def test_two_runs_of_one_pipeline_cannot_both_commit(tmp_path: Path) -> None:
    path = generator_manifest(tmp_path, "fence-run", rate=400)
    first: dict[str, Any] = {}

    def run_first() -> None:
        first["state"] = asyncio.run(run_manifest(str(path), return_state=True, maxDuration=60))

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        await async_wait_for(_committed("fence-run.gen", 1), "the first run's first checkpoint")
        second = await run_manifest(str(path), return_state=True, maxDocuments=100)
        assert second.is_completed()
    finally:
        thread.join(timeout=60)
    state = first["state"]
    assert state.is_failed(), state
    assert "claimed by a newer run" in str(state.message)
    async with get_client() as client:
        tasks = await client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert [t.run_count for t in tasks if t.name.startswith("run-pipeline")] == [
        1
    ]  # a fenced run is not retried
    assert (await read_checkpoint("fence-run.gen")).generation == 2


def _committed(pipeline_id: str, generation: int) -> Any:
    async def check() -> bool:
        checkpoint = await read_checkpoint(pipeline_id)
        return bool(checkpoint and checkpoint.generation == generation and checkpoint.positions)

    return check


# ----------------------------------------------------------------- retries
async def test_a_failing_sink_recovers_through_task_retries(tmp_path: Path) -> None:
    write_orders(tmp_path / "in.jsonl", 30)
    with ScriptedHttpServer() as server:
        server.script(Reply(503), Reply(503))
        path = file_manifest(
            tmp_path,
            "retry-e2e",
            sink={"type": "http", "endpoint": server.url + "/hook", "retry": {"maxAttempts": 1}},
            errorPolicy={"policy": "failFast"},
        )
        state = await drain(path)
        assert state.is_completed(), state
        delivered = server.documents("/hook")
    assert sorted(d["n"] for d in delivered) == list(range(1, 30, 2))
    async with get_client() as client:
        tasks = await client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    run_task = next(t for t in tasks if t.name.startswith("run-pipeline"))
    assert run_task.run_count == 3
    assert any("resuming from checkpoint" in log.message for log in logs)


async def test_connection_blocks_supply_connection_refs_with_masked_secrets(tmp_path: Path) -> None:
    from fluxion_flows.prefect.blocks import FluxionConnection, ensure_registered

    await ensure_registered()
    token = "blk-token-7f3a9"
    with ScriptedHttpServer() as server:
        await FluxionConnection(
            connection_ref="hooks.orders",
            type="http",
            config={"endpoint": server.url + "/blocks"},
            secrets={"bearerToken": token},
        ).asave("hooks-orders-e2e", overwrite=True)
        write_orders(tmp_path / "in.jsonl", 10)
        path = file_manifest(tmp_path, "conn-block-e2e", sink={"connectionRef": "hooks.orders"})
        state = await drain(path, connections=[{"block": "hooks-orders-e2e"}])
        assert state.is_completed(), state
        assert [d["n"] for d in server.documents("/blocks")] == list(range(1, 10, 2))
        assert {r.header("authorization") for r in server.received("/blocks")} == {f"Bearer {token}"}
    async with get_client() as client:
        document = await client.read_block_document_by_name(
            "hooks-orders-e2e", "fluxion-connection", include_secrets=False
        )
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    assert token not in str(document.data)  # SecretStr: masked when read back without secrets
    assert all(token not in log.message for log in logs)
