"""The executor against scripted sources and sinks: lifecycle, bounds, policies, checkpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fluxion_flows.checkpoint import Checkpoint, MemoryCheckpointStore, StaleGenerationError
from fluxion_flows.executor import (
    CheckpointOptions,
    ErrorPolicy,
    ExecutorListener,
    PipelineFailed,
    PolicyKind,
    RuntimeOptions,
    SinkNode,
    Step,
    StreamingPipelineExecutor,
)
from fluxion_flows.executor.stage_state import StageStateMismatchError
from fluxion_flows.spi import Document, NonRetryableError
from fluxion_flows.stages import compile_pipeline
from fluxion_flows.stages.base import FunctionStage, Stage
from tests.support.scripted import ListSource, RecordingSink

FAST = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, observe_interval=0.05)


def numbers(sink: RecordingSink) -> list[int]:
    return [d["n"] for d in sink.documents]


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def executor(source: ListSource, sink: Any, stages: Any = (), **kwargs: Any) -> StreamingPipelineExecutor:
    kwargs.setdefault("runtime", FAST)
    return StreamingPipelineExecutor("test.pipeline", source, sink, stages, **kwargs)


@pytest.mark.parametrize("direct", [False, True])
async def test_finite_source_is_delivered_checkpointed_and_closed(direct: bool) -> None:
    source, sink, store = ListSource(95, batch=10), RecordingSink(), MemoryCheckpointStore()
    runtime = RuntimeOptions(max_batch_wait=0.05, direct_handoff=direct)
    result = await executor(source, sink, store=store, runtime=runtime).run()
    assert numbers(sink) == list(range(95))
    assert result.ended_by == "end-of-stream"
    saved = await store.load("test.pipeline")
    assert saved is not None and saved.positions == {"p": 95}
    assert source.durable[-1] == {"p": 95}
    assert source.closed and sink.opened and sink.closed


async def test_sink_never_receives_more_than_micro_batch_size() -> None:
    source, sink = ListSource(1000, batch=37), RecordingSink()

    def explode(docs: list[Document]) -> list[Document]:
        return [d for doc in docs for d in (doc, {"n": -1})]

    runtime = RuntimeOptions(micro_batch_size=50, max_batch_wait=0.05)
    await executor(source, sink, [explode], runtime=runtime).run()
    assert max(len(b) for b in sink.batches) <= 50
    assert len([n for n in numbers(sink) if n >= 0]) == 1000


async def test_slow_sink_holds_queues_at_their_bounds() -> None:
    source = ListSource(10**9, batch=20, endless=True)
    sink = RecordingSink(delay=0.01)
    runtime = RuntimeOptions(micro_batch_size=20, queue_capacity=100, max_batch_wait=0.01)
    run = executor(source, sink, runtime=runtime)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: sink.calls >= 40)
    m = run.metrics
    in_flight = m.documents_in - m.documents_out
    assert m.transform_queue.max <= 100 and m.delivery_queue.max <= 100
    # both queues, the batch being transformed and delivered, and the source's 4-batch queue
    assert in_flight <= 100 + 100 + 2 * 20 + 20
    run.stop()
    await task


async def test_stop_delivers_in_flight_work_and_checkpoints_exactly_the_output() -> None:
    source, sink, store = (
        ListSource(10**9, batch=10, endless=True),
        RecordingSink(delay=0.002),
        MemoryCheckpointStore(),
    )
    run = executor(source, sink, store=store)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: sink.calls >= 5)
    run.stop()
    result = await task
    assert result.ended_by == "stopped"
    saved = await store.load("test.pipeline")
    assert saved is not None
    assert saved.positions == {"p": len(sink.documents)}
    assert numbers(sink) == list(range(len(sink.documents)))
    assert sink.closed and source.closed


async def test_cancelling_the_run_still_commits_what_was_delivered() -> None:
    source, store = ListSource(10**9, batch=10, endless=True), MemoryCheckpointStore()
    sink = RecordingSink(delay=0.002)
    run = executor(source, sink, store=store)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: sink.calls >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = await store.load("test.pipeline")
    assert saved is not None
    assert saved.positions["p"] <= len(sink.documents)
    assert saved.positions["p"] >= 10
    assert sink.closed


async def test_resume_from_checkpoint_loses_nothing() -> None:
    store = MemoryCheckpointStore()
    first_sink = RecordingSink(delay=0.001)
    run = executor(ListSource(500, batch=10), first_sink, store=store)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: first_sink.calls >= 5)
    run.stop()
    await task
    saved = await store.load("test.pipeline")
    assert saved is not None
    resumed_sink = RecordingSink()
    await executor(ListSource(500, batch=10, start=saved.positions["p"]), resumed_sink, store=store).run()
    assert sorted(set(numbers(first_sink) + numbers(resumed_sink))) == list(range(500))


async def test_fanout_sinks_receive_each_batch_in_order_after_the_main_sink() -> None:
    log: list[str] = []
    main, first, second = (RecordingSink(name, log=log) for name in ("main", "fan1", "fan2"))
    chain = SinkNode(
        "sink", main, "main", children=[SinkNode("f1", first, "f1"), SinkNode("f2", second, "f2")]
    )
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05)
    await executor(ListSource(30, batch=10), chain, runtime=runtime).run()
    assert log == ["main", "fan1", "fan2"] * 3
    assert numbers(first) == numbers(second) == numbers(main) == list(range(30))


async def test_pipeline_sink_runs_stages_before_next() -> None:
    target = RecordingSink()

    def double(docs: list[Document]) -> list[Document]:
        return [{"n": d["n"] * 2} for d in docs]

    chain = SinkNode("sink", stages=[FunctionStage(double)], children=[SinkNode("next", target, "t")])
    await executor(ListSource(20), chain).run()
    assert numbers(target) == [n * 2 for n in range(20)]


async def test_metrics_count_documents_and_stage_invocations() -> None:
    sink = RecordingSink()

    def evens(docs: list[Document]) -> list[Document]:
        return [d for d in docs if d["n"] % 2 == 0]

    run = executor(ListSource(100, batch=10), sink, [FunctionStage(evens, "evens")])
    result = await run.run()
    m = result.metrics
    assert m["documentsIn"] == 100 and m["documentsOut"] == 50
    stage = m["stages"][0]
    assert stage["name"] == "evens" and stage["inputDocs"] == 100 and stage["outputDocs"] == 50
    assert stage["invocations"] == m["batches"]
    assert m["sinks"][0]["documents"] == 50


# ------------------------------------------------------------------ policies
def failing_stage(bad: int) -> FunctionStage:
    def stage(docs: list[Document]) -> list[Document]:
        if any(d["n"] == bad for d in docs):
            raise ValueError(f"cannot handle {bad}")
        return docs

    return FunctionStage(stage, "$bad")


def policy(kind: PolicyKind, **kwargs: Any) -> ErrorPolicy:
    kwargs.setdefault("initial_backoff", 0.001)
    return ErrorPolicy(kind=kind, **kwargs)


async def test_fail_fast_on_stage_error_stops_with_delivered_work_checkpointed() -> None:
    store, sink = MemoryCheckpointStore(), RecordingSink()
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    with pytest.raises(PipelineFailed) as failed:
        await executor(
            ListSource(100, batch=10), sink, [failing_stage(35)], store=store, runtime=runtime
        ).run()
    assert failed.value.step is Step.STAGE
    assert numbers(sink) == list(range(30))
    saved = await store.load("test.pipeline")
    assert saved is not None and saved.positions == {"p": 30}


async def test_skip_drops_only_the_failing_document() -> None:
    sink = RecordingSink()
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    result = await executor(
        ListSource(100, batch=10),
        sink,
        [failing_stage(35)],
        runtime=runtime,
        error_policy=policy(PolicyKind.SKIP),
    ).run()
    assert numbers(sink) == [n for n in range(100) if n != 35]
    assert result.metrics["skipped"] == 1
    assert result.checkpoint is not None and result.checkpoint.positions == {"p": 100}


async def test_dead_letter_wraps_failing_stage_batch_with_context() -> None:
    sink, dead = RecordingSink(), RecordingSink("dlq")
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    result = await executor(
        ListSource(100, batch=10),
        sink,
        [failing_stage(35)],
        runtime=runtime,
        error_policy=policy(PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    assert len(dead.documents) == 1
    envelope = dead.documents[0]
    assert envelope["step"] == "stage" and envelope["where"] == "$bad"
    assert envelope["error"] == {"type": "ValueError", "message": "cannot handle 35"}
    assert envelope["documents"] == [{"n": 35}]  # isolated: the rest of its batch went on
    assert envelope["positions"] == {"p": 40} and envelope["attempts"] == 1 and "time" in envelope
    assert result.metrics["deadLettered"] == 1
    assert numbers(sink) == [n for n in range(100) if n != 35]


async def test_a_stateful_pipeline_dead_letters_the_whole_batch() -> None:
    dead, sink = RecordingSink("dlq"), RecordingSink()
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    await executor(
        ListSource(40, batch=10),
        sink,
        [CountingStage(), failing_stage(15)],
        runtime=runtime,
        error_policy=policy(PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    # re-running parts would count documents twice in the stateful stage, so nothing is split
    assert [d["n"] for d in dead.documents[0]["documents"]] == list(range(10, 20))
    assert len(sink.documents) == 30


async def test_retry_recovers_a_flaky_sink_then_escalates_a_permanent_one() -> None:
    flaky = RecordingSink(fail=lambda call, _: ConnectionError("down") if call <= 2 else None)
    result = await executor(
        ListSource(30, batch=10), flaky, error_policy=policy(PolicyKind.RETRY, max_retries=3)
    ).run()
    assert numbers(flaky) == list(range(30))
    assert result.metrics["retries"] == 2

    broken = RecordingSink(fail=lambda call, _: ConnectionError("down"))
    dead = RecordingSink("dlq")
    await executor(
        ListSource(10, batch=10),
        broken,
        error_policy=policy(PolicyKind.RETRY, max_retries=2, then=PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    assert broken.calls == 3
    assert dead.documents[0]["attempts"] == 3 and dead.documents[0]["step"] == "sink"


async def test_non_retryable_sink_error_skips_retries_and_isolates_the_rejected_document() -> None:
    class BadRequest(NonRetryableError):
        status = 400
        body_excerpt = '{"error": "bad"}'

    def reject_three(call: int, batch: Any) -> BaseException | None:
        return BadRequest("HTTP 400") if any(d["n"] == 3 for d in batch) else None

    sink, dead = RecordingSink(fail=reject_three), RecordingSink()
    await executor(
        ListSource(20, batch=10),
        sink,
        runtime=RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True),
        error_policy=policy(PolicyKind.RETRY, max_retries=5, then=PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    assert sorted(numbers(sink)) == [n for n in range(20) if n != 3]
    assert [e["documents"] for e in dead.documents] == [[{"n": 3}]]
    error = dead.documents[0]["error"]
    assert error["status"] == 400 and error["body_excerpt"] == '{"error": "bad"}'
    assert len({b.key for b in sink.batches}) == len(sink.batches)  # parts get their own stable keys


async def test_sink_fail_fast_raises_pipeline_failed() -> None:
    sink = RecordingSink(fail=lambda call, _: RuntimeError("nope"))
    with pytest.raises(PipelineFailed) as failed:
        await executor(ListSource(10), sink).run()
    assert failed.value.step is Step.SINK and sink.closed


@pytest.mark.parametrize(
    ("kind", "delivered"),
    [(PolicyKind.RETRY, 50), (PolicyKind.SKIP, 50), (PolicyKind.DEAD_LETTER, 50)],
)
async def test_source_poll_failures_are_handled_by_the_policy(kind: PolicyKind, delivered: int) -> None:
    dead = RecordingSink("dlq")
    source, sink = ListSource(50, batch=10, fail_polls={2, 3}), RecordingSink()
    extra: dict[str, Any] = {"dead_letter": dead} if kind is PolicyKind.DEAD_LETTER else {}
    result = await executor(source, sink, error_policy=policy(kind, **extra)).run()
    assert numbers(sink) == list(range(delivered))
    if kind is PolicyKind.RETRY:
        assert result.metrics["retries"] == 2
    if kind is PolicyKind.DEAD_LETTER:
        assert [e["step"] for e in dead.documents] == ["source", "source"]


async def test_source_failure_fail_fast() -> None:
    with pytest.raises(PipelineFailed) as failed:
        await executor(ListSource(50, batch=10, fail_polls={2}), RecordingSink()).run()
    assert failed.value.step is Step.SOURCE


async def test_record_failures_are_dead_lettered_with_position_and_raw() -> None:
    dead, sink = RecordingSink("dlq"), RecordingSink()
    await executor(
        ListSource(30, batch=10, bad_records={7, 21}),
        sink,
        error_policy=policy(PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    assert numbers(sink) == [n for n in range(30) if n not in (7, 21)]
    raws = [(e["record"]["position"], e["documents"][0]["raw"], e["error"]["type"]) for e in dead.documents]
    assert raws == [
        ({"p": 8}, "{bad 7", "DeserializationError"),
        ({"p": 22}, "{bad 21", "DeserializationError"),
    ]


# ------------------------------------------------------------------ state and checkpoints
class CountingStage(Stage):
    """A stateful stage: running count per parity, emitted after every batch."""

    stateful = True

    def __init__(self) -> None:
        super().__init__("$count", "process.stages[0]")
        self.counts: dict[str, int] = {}

    def __call__(self, documents: list[Document]) -> list[Document]:
        for d in documents:
            key = "even" if d["n"] % 2 == 0 else "odd"
            self.counts[key] = self.counts.get(key, 0) + 1
        return [{"n": d["n"]} for d in documents]

    def snapshot(self) -> Any:
        return dict(self.counts)

    def restore(self, state: Any) -> None:
        self.counts = dict(state)

    def state_size(self) -> int:
        return len(self.counts)


async def test_stage_state_resumes_exactly_across_restart() -> None:
    store = MemoryCheckpointStore()
    first = CountingStage()
    sink = RecordingSink(delay=0.001)
    run = executor(
        ListSource(4000, batch=10), sink, [first], store=store, checkpoint=CheckpointOptions(interval=0.0)
    )
    task = asyncio.create_task(run.run())
    await wait_for(lambda: run.metrics.checkpoints >= 2)
    task.cancel()  # abrupt: state must still match the committed positions
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = await store.load("test.pipeline")
    assert saved is not None
    committed = saved.positions["p"]
    assert sum(saved.stage_state["process[0]"]["state"].values()) == committed
    second = CountingStage()
    assert committed < 4000
    await executor(ListSource(4000, batch=10, start=committed), RecordingSink(), [second], store=store).run()
    assert second.counts == {"even": 2000, "odd": 2000}


async def test_stage_state_is_keyed_by_manifest_index_when_stages_are_fused() -> None:
    """``$set`` + ``$project`` run as one stage; the ``$group`` after them is still ``process[2]``."""
    stages = compile_pipeline(
        [
            {"$set": {"parity": {"$mod": ["$n", 2]}}},
            {"$project": {"_id": 0, "parity": 1}},
            {"$group": {"_id": "$parity", "count": {"$sum": 1}}},
        ]
    )
    assert [s.name for s in stages] == ["$set+$project", "$group"]
    store = MemoryCheckpointStore()
    await executor(ListSource(100, batch=10), RecordingSink(), stages, store=store).run()
    saved = await store.load("test.pipeline")
    assert saved is not None and list(saved.stage_state) == ["process[2]"]
    restored = compile_pipeline([{"$group": {"_id": "$parity", "count": {"$sum": 1}}}])
    fresh = compile_pipeline([{"$set": {"parity": 1}}, {"$project": {"_id": 0, "parity": 1}}]) + restored
    sink = RecordingSink()
    await executor(ListSource(120, batch=10, start=100), sink, fresh, store=store).run()
    assert restored[0].state_size() == 2  # both parities came back from the checkpoint
    assert sink.documents[-1] == {"_id": 1, "count": 70}  # 50 odd numbers before, 20 more now


PARITY_GROUP = {"$group": {"_id": {"$mod": ["$n", 2]}, "count": {"$sum": 1}}}


async def _grouped_100(store: MemoryCheckpointStore) -> None:
    """Counts of 0..99 by parity, checkpointed under ``process[0]``."""
    await executor(
        ListSource(100, batch=10), RecordingSink(), compile_pipeline([PARITY_GROUP]), store=store
    ).run()


async def test_stage_state_follows_its_stage_when_a_stage_is_inserted_before_it() -> None:
    store = MemoryCheckpointStore()
    await _grouped_100(store)
    moved = compile_pipeline([{"$match": {"n": {"$gte": 0}}}, PARITY_GROUP])
    sink = RecordingSink()
    await executor(ListSource(120, batch=10, start=100), sink, moved, store=store).run()
    assert sink.documents[-2:] == [{"_id": 0, "count": 60}, {"_id": 1, "count": 60}]
    saved = await store.load("test.pipeline")
    assert saved is not None and list(saved.stage_state) == ["process[1]"]


@pytest.mark.parametrize(
    "stages, found",
    [
        (
            [{"$group": {"_id": {"$mod": ["$n", 2]}, "total": {"$sum": "$n"}}}],
            "is now `$group`, spec changed",
        ),
        ([{"$match": {"n": {"$gte": 0}}}], "is now `$match`"),
        ([], "no stage there now"),
    ],
    ids=["changed", "replaced", "removed"],
)
async def test_state_no_stage_can_take_stops_the_run_before_anything_is_read(
    stages: list[dict[str, Any]], found: str
) -> None:
    store = MemoryCheckpointStore()
    await _grouped_100(store)
    sink = RecordingSink()
    source = ListSource(120, batch=10, start=100)
    with pytest.raises(StageStateMismatchError) as caught:
        await executor(source, sink, compile_pipeline(stages), store=store).run()
    message = str(caught.value)
    assert "`process[0]` ($group: " in message and found in message
    assert "--start-from earliest" in message
    assert sink.calls == 0
    saved = await store.load("test.pipeline")
    assert saved is not None and saved.positions == {"p": 100}
    assert saved.stage_state["process[0]"]["stage"] == "$group"  # the state is kept for the right manifest


async def test_state_saved_before_spec_digests_is_restored_by_key() -> None:
    store = MemoryCheckpointStore()
    await store.save(
        Checkpoint(
            "test.pipeline",
            generation=1,
            positions={"p": 10},
            stage_state={"process[0]": {"even": 5, "odd": 5}},
        )
    )
    stage = CountingStage()
    await executor(ListSource(20, batch=10, start=10), RecordingSink(), [stage], store=store).run()
    assert stage.counts == {"even": 10, "odd": 10}


async def test_a_newer_run_fences_the_older_one() -> None:
    store = MemoryCheckpointStore()
    old_sink = RecordingSink(delay=0.001)
    old = executor(
        ListSource(10**9, endless=True), old_sink, store=store, checkpoint=CheckpointOptions(interval=0.0)
    )
    task = asyncio.create_task(old.run())
    await wait_for(lambda: old_sink.calls >= 2)
    await store.claim("test.pipeline")  # a second run of the same pipeline starts
    with pytest.raises(StaleGenerationError):
        await task


async def test_checkpoint_every_documents() -> None:
    store = MemoryCheckpointStore()
    seen: list[dict[str, Any]] = []

    class Listener(ExecutorListener):
        async def on_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            seen.append(checkpoint)

    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    await executor(
        ListSource(100, batch=10),
        RecordingSink(),
        store=store,
        runtime=runtime,
        listener=Listener(),
        checkpoint=CheckpointOptions(interval=3600, every_documents=30),
    ).run()
    assert len(seen) >= 3
    assert seen[-1]["positions"] == {"p": 100}


async def test_batch_keys_are_stable_across_replays() -> None:
    def keys() -> list[str]:
        return [b.key for b in sink.batches]

    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, direct_handoff=True)
    sink = RecordingSink()
    await executor(ListSource(50, batch=10), sink, runtime=runtime).run()
    first = keys()
    sink = RecordingSink()
    await executor(ListSource(50, batch=10), sink, runtime=runtime).run()
    assert keys() == first and len(set(first)) == 5


async def test_max_documents_limit_ends_the_run() -> None:
    sink = RecordingSink()
    runtime = RuntimeOptions(micro_batch_size=10, max_batch_wait=0.05, max_documents=30)
    result = await executor(ListSource(10**6, batch=10), sink, runtime=runtime).run()
    assert result.ended_by == "limit"
    assert 30 <= len(sink.documents) <= 40


async def test_only_the_records_a_sink_reports_as_failed_are_dead_lettered() -> None:
    class SomeRecordsFailed(NonRetryableError):
        def __init__(self, documents: list[Document]) -> None:
            super().__init__("2 records too large")
            self.failed_documents = documents

    def fail(call: int, batch: Any) -> BaseException | None:
        return SomeRecordsFailed([d for d in batch if d["n"] in (3, 4)]) if call == 1 else None

    dead = RecordingSink("dlq")
    await executor(
        ListSource(10, batch=10),
        RecordingSink(fail=fail),
        error_policy=policy(PolicyKind.DEAD_LETTER, dead_letter=dead),
    ).run()
    assert [d["n"] for d in dead.documents[0]["documents"]] == [3, 4]


async def test_a_source_checkpoints_only_the_positions_it_owns() -> None:
    class HalfOwner(ListSource):
        def owned_positions(self, positions: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in positions.items() if k == "p"}

        async def poll(self) -> Any:
            batch = await super().poll()
            if batch is not None:
                batch.positions["other"] = -1
            return batch

    store = MemoryCheckpointStore()
    claim = await store.claim("test.pipeline", shared=True)
    from fluxion_flows.checkpoint import Checkpoint

    await store.save(Checkpoint("test.pipeline", claim.generation, {"other": 99}))
    await executor(HalfOwner(20), RecordingSink(), store=store, claimed=claim).run()
    saved = await store.load("test.pipeline")
    assert saved is not None and saved.positions == {"other": 99, "p": 20}


async def test_checkpoint_now_commits_what_was_delivered() -> None:
    store, sink = MemoryCheckpointStore(), RecordingSink(delay=0.002)
    run = executor(
        ListSource(10**9, endless=True), sink, store=store, checkpoint=CheckpointOptions(interval=3600)
    )
    task = asyncio.create_task(run.run())
    await wait_for(lambda: sink.calls >= 3)
    await run.checkpoint_now()
    saved = await store.load("test.pipeline")
    assert saved is not None and saved.positions["p"] >= 20  # the third write may still be in flight
    run.stop()
    await task
