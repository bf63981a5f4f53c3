"""Every manifest shape of reference §1 (and our extensions) loads into the plan it describes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from fluxion_flows.errors import ManifestError, NotStreamingError
from fluxion_flows.executor import PolicyKind
from fluxion_flows.manifest.loader import load_manifest, parse_override
from fluxion_flows.manifest.model import OTHER_EXECUTION_TYPES
from fluxion_flows.pipeline import Pipeline
from tests.manifest.util import execution, manifest, raises_at

Write = Callable[[str, Any], str]


def sink_tree(pipeline: Pipeline) -> list[tuple[str, str, int]]:
    """The sink chain as (path, type, number of stages), depth first, in delivery order."""
    found: list[tuple[str, str, int]] = []

    def walk(node: Any) -> None:
        found.append((node.path, node.type, len(node.stages)))
        for child in node.children:
            walk(child)

    walk(pipeline.create_sink_chain())
    return found


# ------------------------------------------------------------------ operations
def test_plain_operation_form_maps_a_name_to_an_operation_def(write: Write) -> None:
    doc = manifest(operations={"orders-stream": "orders"})
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert pipeline.plan.operation == "orders-stream"
    assert pipeline.plan.execution_path == ("operationDefs", "orders", "execution")
    assert pipeline.pipeline_id == "test-bundle.orders-stream"


def test_ref_operation_form(write: Write) -> None:
    doc = manifest(operations={"orders-stream": {"$ref": "#/operationDefs/orders"}})
    pipeline = Pipeline.from_manifest(write("m.yaml", doc), operation="orders-stream")
    assert pipeline.plan.operation == "orders-stream"
    assert pipeline.plan.execution_path == ("operationDefs", "orders", "execution")


def test_inline_operation_definition_under_operations(write: Write) -> None:
    doc = {"id": "b", "operations": {"inline-op": {"kind": "action", "execution": execution()}}}
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert pipeline.plan.operation == "inline-op"
    assert pipeline.plan.execution_path == ("operations", "inline-op", "execution")


def test_operation_defs_only(write: Write) -> None:
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest()))
    assert pipeline.plan.operation == "orders"
    assert pipeline.describe()["source"] == {"type": "generator", "count": 5, "seed": 42}


def test_ref_to_a_missing_definition_names_it_with_did_you_mean(write: Write) -> None:
    path = write("m.yaml", manifest(operations={"o": {"$ref": "#/operationDefs/order"}}))
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    message = raises_at(caught.value, ManifestError, path, "operations", "o")
    assert "missing operationDefs entry `order`" in message
    assert "did you mean `orders`?" in message


def test_malformed_ref_is_reported_at_the_ref(write: Write) -> None:
    path = write("m.yaml", manifest(operations={"o": {"$ref": "#/definitions/orders"}}))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = raises_at(caught.value, ManifestError, path, "operations", "o", "$ref")
    assert "#/definitions/orders" in message
    assert "more problem" not in message


@pytest.mark.parametrize("kind", ["action", "trigger"])
def test_kind(write: Write, kind: str) -> None:
    doc = manifest()
    doc["operationDefs"]["orders"]["kind"] = kind
    loaded = load_manifest(write("m.yaml", doc))
    assert loaded.manifest.operationDefs["orders"].kind == kind


def test_kind_typo(write: Write) -> None:
    doc = manifest()
    doc["operationDefs"]["orders"]["kind"] = "triger"
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = raises_at(caught.value, ManifestError, path, "operationDefs", "orders", "kind")
    assert "did you mean `trigger`?" in message
    assert caught.value.valid == ["action", "trigger"]


def test_input_and_output_schemas(write: Write) -> None:
    doc = manifest()
    schema = {"type": "object", "properties": {"orderId": {"type": "string"}}, "required": ["orderId"]}
    doc["operationDefs"]["orders"].update(inputSchema=schema, outputSchema={"type": "object"})
    operation = load_manifest(write("m.yaml", doc)).manifest.operationDefs["orders"]
    assert operation.inputSchema == schema
    assert operation.outputSchema == {"type": "object"}


@pytest.mark.parametrize("key", ["inputSchema", "outputSchema"])
def test_invalid_json_schema_is_rejected_at_its_path(write: Write, key: str) -> None:
    doc = manifest()
    doc["operationDefs"]["orders"][key] = {"type": "nonsense"}
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    message = raises_at(caught.value, ManifestError, path, "operationDefs", "orders", key)
    assert "not a valid JSON Schema" in message


# ------------------------------------------------------------------ execution types
@pytest.mark.parametrize("kind", OTHER_EXECUTION_TYPES)
def test_non_streaming_executions_parse_but_do_not_run(write: Write, kind: str) -> None:
    doc = manifest()
    doc["operationDefs"]["legacy"] = {"execution": {"type": kind, "url": "http://x", "bean": "a.B"}}
    path = write("m.yaml", doc)
    loaded = load_manifest(path)
    assert loaded.manifest.operationDefs["legacy"].execution.type == kind
    assert Pipeline.from_manifest(path).plan.operation == "orders"  # the only streaming one is chosen
    with pytest.raises(NotStreamingError) as caught:
        Pipeline.from_manifest(path, operation="legacy")
    message = raises_at(caught.value, NotStreamingError, path, "operationDefs", "legacy", "execution", "type")
    assert "operation `legacy` is not a streaming operation" in message
    assert f"execution type `{kind}`" in message
    assert caught.value.valid == ["orders"]


def test_manifest_without_streaming_operation_names_what_it_has(write: Write) -> None:
    path = write("m.yaml", {"id": "b", "operationDefs": {"tick": {"execution": {"type": "timer"}}}})
    with pytest.raises(NotStreamingError) as caught:
        Pipeline.from_manifest(path)
    message = raises_at(caught.value, NotStreamingError, path, "operationDefs")
    assert "no streaming operation" in message
    assert "`tick` is `timer`" in message


def test_several_streaming_operations_need_a_choice(write: Write) -> None:
    doc = manifest()
    doc["operationDefs"]["refunds"] = {"execution": execution()}
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    assert "--operation" in str(caught.value)
    assert caught.value.valid == ["orders", "refunds"]
    assert Pipeline.from_manifest(path, operation="refunds").plan.operation == "refunds"


def test_unknown_operation_name(write: Write) -> None:
    path = write("m.yaml", manifest())
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path, operation="order")
    message = raises_at(caught.value, ManifestError, path, "operations")
    assert "no operation named `order`" in message
    assert "did you mean `orders`?" in message


# ------------------------------------------------------------------ options: inline, options:, merged
def test_options_inline_and_under_options_merge_inline_last(write: Write) -> None:
    source = {"type": "generator", "options": {"seed": 1, "count": 10}, "count": 20}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(source=source))))
    assert dict(pipeline.source_config.values) == {"seed": 1, "count": 20}


def test_sink_options_under_options(write: Write) -> None:
    sink = {"type": "file", "options": {"path": "out.jsonl", "fsync": False}}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(sink=sink))))
    assert pipeline.sink.config is not None
    assert dict(pipeline.sink.config.values) == {"path": "out.jsonl", "fsync": False}


def test_defaults_are_applied(write: Write) -> None:
    pipeline = Pipeline.from_manifest(
        write("m.yaml", manifest(execution(sink={"type": "file", "path": "o"})))
    )
    assert pipeline.sink.config is not None
    assert pipeline.sink.config["fsync"] is True


# ------------------------------------------------------------------ process
def test_process_with_inline_stages(write: Write) -> None:
    process = {"type": "pipeline", "stages": [{"$match": {"status": "PAID"}}, {"$set": {"n": 1}}]}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(process=process))))
    assert [s.name for s in pipeline.stages] == ["$match", "$set"]
    assert pipeline.plan.process is not None
    assert pipeline.plan.process.path == ("operationDefs", "orders", "execution", "process", "stages")
    out = pipeline.stages[1](pipeline.stages[0]([{"status": "PAID"}, {"status": "NEW"}]))
    assert out == [{"status": "PAID", "n": 1}]


def test_process_from_pipelines_map_list_form(write: Write) -> None:
    doc = manifest(
        execution(process={"type": "pipeline", "pipeline": "paid", "version": "1.0.0"}),
        pipelines={"paid@1.0.0": [{"$match": {"status": "PAID"}}], "paid@2.0.0": [{"$limit": 1}]},
    )
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert [s.name for s in pipeline.stages] == ["$match"]
    assert pipeline.plan.process is not None
    assert pipeline.plan.process.path == ("pipelines", "paid@1.0.0")


def test_process_from_pipelines_map_object_form_with_globals(write: Write) -> None:
    doc = manifest(
        execution(process={"type": "pipeline", "pipeline": "tax", "version": 2}),
        pipelines={"tax@2": {"stages": [{"$set": {"rate": "$$GLOBALS.rate"}}], "globals": {"rate": 0.2}}},
    )
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert pipeline.plan.process is not None
    assert pipeline.plan.process.path == ("pipelines", "tax@2", "stages")
    assert pipeline.plan.process.globals == {"rate": 0.2}
    assert pipeline.stages[0]([{"a": 1}]) == [{"a": 1, "rate": 0.2}]


def test_unknown_pipeline_version(write: Write) -> None:
    doc = manifest(
        execution(process={"type": "pipeline", "pipeline": "paid", "version": "1.0.1"}),
        pipelines={"paid@1.0.0": [{"$match": {}}]},
    )
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    message = raises_at(
        caught.value, ManifestError, path, "operationDefs", "orders", "execution", "process", "pipeline"
    )
    assert "pipeline `paid@1.0.1` is not defined" in message
    assert "did you mean `paid@1.0.0`?" in message


def test_pipeline_call_is_a_clear_error(write: Write) -> None:
    process = {"type": "pipelineCall", "pipeline": "remote", "version": "1"}
    path = write("m.yaml", manifest(execution(process=process)))
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    message = raises_at(
        caught.value, ManifestError, path, "operationDefs", "orders", "execution", "process", "type"
    )
    assert "pipelineCall" in message
    assert "remote pipeline service" in message
    assert "stages:" in message


# ------------------------------------------------------------------ sinks
def test_fanout_keeps_its_order_after_the_main_sink(write: Write) -> None:
    sink = {
        "type": "memory",
        "name": "main",
        "fanout": [{"type": "memory", "name": "b"}, {"type": "stdout"}, {"type": "memory", "name": "a"}],
    }
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(sink=sink))))
    base = "operationDefs.orders.execution.sink"
    assert sink_tree(pipeline) == [
        (base, "memory", 0),
        (f"{base}.fanout.0", "memory", 0),
        (f"{base}.fanout.1", "stdout", 0),
        (f"{base}.fanout.2", "memory", 0),
    ]
    names = [c.config["name"] for c in pipeline.sink.children if c.config and c.config.type == "memory"]
    assert names == ["b", "a"]


@pytest.mark.parametrize(
    ("next_", "children"),
    [
        ({"type": "memory", "name": "one"}, [("next", "memory")]),
        ([{"type": "memory", "name": "x"}, {"type": "stdout"}], [("next.0", "memory"), ("next.1", "stdout")]),
        (
            {"fanout": [{"type": "stdout"}, {"type": "memory"}]},
            [("next.fanout.0", "stdout"), ("next.fanout.1", "memory")],
        ),
    ],
    ids=["one-sink", "list", "fanout"],
)
def test_pipeline_sink_next_forms(write: Write, next_: Any, children: list[tuple[str, str]]) -> None:
    sink = {"type": "pipeline", "stages": [{"$match": {"ok": True}}], "next": next_}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(sink=sink))))
    base = "operationDefs.orders.execution.sink"
    assert sink_tree(pipeline) == [(base, "pipeline", 1)] + [(f"{base}.{p}", t, 0) for p, t in children]


def test_pipeline_sink_from_pipelines_map(write: Write) -> None:
    sink = {"type": "pipeline", "pipeline": "enrich", "version": "1", "next": {"type": "memory"}}
    doc = manifest(execution(sink=sink), pipelines={"enrich@1": [{"$set": {"e": True}}, {"$unset": "x"}]})
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert [s.name for s in pipeline.sink.stages] == ["$set", "$unset"]


def test_pipeline_sink_without_next(write: Write) -> None:
    path = write("m.yaml", manifest(execution(sink={"type": "pipeline", "stages": []})))
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    raises_at(caught.value, ManifestError, path, "operationDefs", "orders", "execution", "sink", "next")


# ------------------------------------------------------------------ runtime, errorPolicy, checkpoint
def test_root_extensions(write: Write) -> None:
    doc = manifest(
        runtime={"microBatchSize": 7, "maxBatchWait": "PT0.25S", "directHandoff": True, "stopTimeout": "2s"},
        errorPolicy={
            "policy": "retry",
            "maxRetries": 5,
            "initialBackoff": "500ms",
            "then": "skipAndContinue",
        },
        checkpoint={"store": "memory", "interval": "PT2S", "everyDocuments": 100},
    )
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    runtime = pipeline.runtime_options()
    assert (runtime.micro_batch_size, runtime.max_batch_wait, runtime.direct_handoff) == (7, 0.25, True)
    assert runtime.stop_timeout == 2.0
    policy = pipeline.error_policy()
    assert (policy.kind, policy.max_retries, policy.initial_backoff, policy.then) == (
        PolicyKind.RETRY,
        5,
        0.5,
        PolicyKind.SKIP,
    )
    options = pipeline.checkpoint_options()
    assert (options.interval, options.every_documents) == (2.0, 100)
    assert pipeline.plan.checkpoint.store == "memory"


def test_defaults_of_extensions(write: Write) -> None:
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest()))
    runtime = pipeline.runtime_options()
    assert (runtime.micro_batch_size, runtime.queue_capacity, runtime.source_queue_capacity) == (
        500,
        2048,
        16,
    )
    assert (runtime.max_batch_wait, runtime.direct_handoff) == (0.5, False)
    assert pipeline.error_policy().kind is PolicyKind.FAIL_FAST
    assert (pipeline.plan.checkpoint.store, pipeline.plan.checkpoint.interval) == ("file", 5.0)


def test_error_policy_string_shorthand(write: Write) -> None:
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(errorPolicy="skipAndContinue")))
    assert pipeline.error_policy().kind is PolicyKind.SKIP


def test_dead_letter_policy_with_its_sink(write: Write) -> None:
    policy = {"policy": "deadLetter", "sink": {"type": "memory", "name": "dlq"}}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(errorPolicy=policy)))
    assert pipeline.describe()["deadLetter"] == {"type": "memory", "name": "dlq"}
    assert pipeline.error_policy().dead_letter is not None


def test_per_execution_blocks_override_the_root(write: Write) -> None:
    ex = execution(
        runtime={"microBatchSize": 3},
        errorPolicy={"policy": "skipAndContinue"},
        checkpoint={"store": "memory", "interval": 1},
    )
    doc = manifest(ex, runtime={"microBatchSize": 99}, errorPolicy="retry", checkpoint={"interval": 9})
    pipeline = Pipeline.from_manifest(write("m.yaml", doc))
    assert pipeline.runtime_options().micro_batch_size == 3
    assert pipeline.error_policy().kind is PolicyKind.SKIP
    assert (pipeline.plan.checkpoint.store, pipeline.plan.checkpoint.interval) == ("memory", 1.0)
    assert pipeline.plan.checkpoint_path == ("operationDefs", "orders", "execution", "checkpoint")


def test_unknown_checkpoint_store_is_reported_where_it_was_written(write: Write) -> None:
    path = write("m.yaml", manifest(execution(checkpoint={"store": "redis"})))
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path)
    raises_at(
        caught.value, ManifestError, path, "operationDefs", "orders", "execution", "checkpoint", "store"
    )
    assert caught.value.valid is not None and {"file", "memory"} <= set(caught.value.valid)


# ------------------------------------------------------------------ formats
def test_json_and_yaml_files_load_the_same(write: Write) -> None:
    doc = manifest(runtime={"microBatchSize": 7})
    from_yaml = Pipeline.from_manifest(write("m.yaml", doc))
    from_json = Pipeline.from_manifest(write("m.json", doc))
    assert from_yaml.describe() == from_json.describe()
    assert from_json.plan.file is not None and from_json.plan.file.endswith("m.json")


def test_text_and_mapping_sources(write: Write) -> None:
    doc = manifest()
    for source in (doc, yaml.safe_dump(doc), json.dumps(doc)):
        assert Pipeline.from_manifest(source).plan.operation == "orders"


def test_yaml_is_loaded_safely(write: Write) -> None:
    path = write("m.yaml", "id: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert "invalid YAML" in str(caught.value)


# ------------------------------------------------------------------ --set overrides
def overrides(*assignments: str) -> dict[str, Any]:
    return dict(parse_override(a) for a in assignments)


def test_relative_overrides_apply_to_the_operations_execution(write: Write) -> None:
    path = write("m.yaml", manifest(execution(source={"type": "generator", "options": {"count": 5}})))
    pipeline = Pipeline.from_manifest(path, overrides=overrides("source.options.count=9", "sink.name=other"))
    assert pipeline.source_config["count"] == 9
    assert pipeline.sink.config is not None and pipeline.sink.config["name"] == "other"


def test_absolute_overrides(write: Write) -> None:
    path = write("m.yaml", manifest(runtime={"microBatchSize": 5}))
    pipeline = Pipeline.from_manifest(
        path, overrides=overrides("runtime.microBatchSize=11", "operationDefs.orders.execution.source.seed=7")
    )
    assert pipeline.runtime_options().micro_batch_size == 11
    assert pipeline.source_config["seed"] == 7


def test_override_into_error_policy_shorthand(write: Write) -> None:
    path = write("m.yaml", manifest(errorPolicy="skipAndContinue"))
    pipeline = Pipeline.from_manifest(
        path, overrides=overrides("errorPolicy.policy=retry", "errorPolicy.maxRetries=1")
    )
    policy = pipeline.error_policy()
    assert (policy.kind, policy.max_retries) == (PolicyKind.RETRY, 1)


def test_override_with_several_streaming_operations_needs_operation(write: Write) -> None:
    doc = manifest()
    doc["operationDefs"]["b"] = {"execution": execution()}
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        Pipeline.from_manifest(path, overrides=overrides("source.seed=1"))
    assert "--operation" in str(caught.value)
    pipeline = Pipeline.from_manifest(path, operation="b", overrides=overrides("source.seed=1"))
    assert pipeline.source_config["seed"] == 1


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("a=1", 1),
        ("a=true", True),
        ("a=PT1S", "PT1S"),
        ("a=x=y", "x=y"),
        ("a=[1, 2]", [1, 2]),
        ("a=", ""),
        ("a={half", "{half"),
    ],
)
def test_override_values_are_read_as_yaml(assignment: str, expected: Any) -> None:
    assert parse_override(assignment) == ("a", expected)


def test_override_without_equals() -> None:
    with pytest.raises(ManifestError, match="expected path=value, found `novalue`"):
        parse_override("novalue")
