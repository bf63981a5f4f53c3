"""Every error a user can cause (issue 2, item 3): its class, file, path, what was found and what is valid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fluxion_flows.errors import (
    ConnectionsError,
    FluxionError,
    ManifestError,
    NotStreamingError,
    OptionError,
    PlaceholderError,
    ProviderError,
    StageError,
)
from fluxion_flows.manifest.loader import load_manifest
from fluxion_flows.pipeline import Pipeline
from tests.manifest.util import execution, manifest, raises_at

Write = Callable[[str, Any], str]
EXEC = ("operationDefs", "orders", "execution")


def failure(path: str, **kwargs: Any) -> FluxionError:
    with pytest.raises(FluxionError) as caught:
        Pipeline.from_manifest(path, **kwargs)
    return caught.value


# ------------------------------------------------------------------ syntax
def test_bad_yaml_gives_line_and_column(write: Write) -> None:
    path = write("m.yaml", "id: x\noperationDefs:\n  orders:\n    execution: {type: streaming\n")
    error = failure(path)
    message = raises_at(error, ManifestError, path)
    assert "invalid YAML at line 5, column 1" in message


def test_bad_yaml_indentation(write: Write) -> None:
    path = write("m.yaml", "id: x\n  bad: indent\n")
    message = raises_at(failure(path), ManifestError, path)
    assert "invalid YAML at line 2, column 6: mapping values are not allowed here" in message


def test_bad_json_gives_line_and_column(write: Write) -> None:
    path = write("m.json", '{"id": "x",\n "operationDefs": }')
    message = raises_at(failure(path), ManifestError, path)
    assert "invalid JSON at line 2, column 19" in message


def test_missing_file(write: Write, tmp_path: Any) -> None:
    path = str(tmp_path / "absent.yaml")
    assert "manifest file not found" in raises_at(failure(path), ManifestError, path)


def test_top_level_must_be_a_map(write: Write) -> None:
    path = write("m.yaml", "- a\n- b\n")
    assert "must be a map at the top level" in raises_at(failure(path), ManifestError, path)


# ------------------------------------------------------------------ providers and options
def test_unknown_provider_id_did_you_mean(write: Write) -> None:
    path = write("m.yaml", manifest(execution(source={"type": "generater"})))
    error = failure(path)
    message = raises_at(error, ProviderError, path, *EXEC, "source", "type")
    assert "unknown source type `generater`" in message
    assert "did you mean `generator`?" in message
    assert error.valid is not None and {"file", "generator"} <= set(error.valid)


def test_unknown_sink_provider_lists_sinks(write: Write) -> None:
    path = write("m.yaml", manifest(execution(sink={"type": "kafak"})))
    error = failure(path)
    raises_at(error, ProviderError, path, *EXEC, "sink", "type")
    assert error.found == "kafak"
    assert error.valid is not None and {"file", "memory", "stdout"} <= set(error.valid)


def test_missing_required_option(write: Write) -> None:
    path = write("m.yaml", manifest(execution(sink={"type": "file"})))
    message = raises_at(failure(path), OptionError, path, *EXEC, "sink", "path")
    assert "missing required option `path` (string)" in message


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ({"type": "generator", "count": "many"}, ("count",), "expected an integer, found string 'many'"),
        (
            {"type": "generator", "options": {"rate": [1]}},
            ("options", "rate"),
            "expected a number, found list",
        ),
        ({"type": "file", "path": "x", "follow": "perhaps"}, ("follow",), "expected true or false"),
        ({"type": "file", "path": "x", "pollInterval": "soon"}, ("pollInterval",), "ISO-8601 duration"),
        (
            {"type": "file", "path": "x", "format": "csv"},
            ("format",),
            "expected one of auto, jsonl, json-array",
        ),
    ],
    ids=["int", "float-under-options", "bool", "duration", "enum"],
)
def test_wrong_option_type(
    write: Write, source: dict[str, Any], where: tuple[str, ...], expected: str
) -> None:
    path = write("m.yaml", manifest(execution(source=source)))
    message = raises_at(failure(path), OptionError, path, *EXEC, "source", *where)
    assert f"invalid value for option `{where[-1]}`" in message
    assert expected in message


def test_unknown_option_did_you_mean(write: Write) -> None:
    path = write("m.yaml", manifest(execution(source={"type": "generator", "cout": 3})))
    error = failure(path)
    message = raises_at(error, OptionError, path, *EXEC, "source", "cout")
    assert "unknown option `cout`" in message
    assert "did you mean `count`?" in message
    assert error.valid == ["count", "rate", "seed"]


def test_unknown_option_under_options_is_reported_there(write: Write) -> None:
    path = write(
        "m.yaml", manifest(execution(sink={"type": "file", "path": "o", "options": {"fsnyc": True}}))
    )
    message = raises_at(failure(path), OptionError, path, *EXEC, "sink", "options", "fsnyc")
    assert "did you mean `fsync`?" in message


def test_option_error_in_a_fanout_sink(write: Write) -> None:
    sink = {"type": "memory", "fanout": [{"type": "stdout"}, {"type": "memory", "nmae": "x"}]}
    path = write("m.yaml", manifest(execution(sink=sink)))
    message = raises_at(failure(path), OptionError, path, *EXEC, "sink", "fanout", 1, "nmae")
    assert "sink.fanout[1].nmae" in message
    assert "did you mean `name`?" in message


def test_option_error_in_the_dead_letter_sink(write: Write) -> None:
    policy = {"policy": "deadLetter", "sink": {"type": "memory", "nam": "dlq"}}
    path = write("m.yaml", manifest(errorPolicy=policy))
    assert "did you mean `name`?" in raises_at(failure(path), OptionError, path, "errorPolicy", "sink", "nam")


# ------------------------------------------------------------------ placeholders
def test_unresolved_env_placeholder(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUXION_TEST_OUT", raising=False)
    path = write("m.yaml", manifest(execution(sink={"type": "file", "path": "${FLUXION_TEST_OUT}"})))
    message = raises_at(failure(path), PlaceholderError, path, *EXEC, "sink", "path")
    assert "unresolved placeholder `${FLUXION_TEST_OUT}`" in message
    assert "${FLUXION_TEST_OUT:-default}" in message


def test_unresolved_mustache_placeholder_never_shows_resolved_parts(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXION_TEST_PW", "pw-value-123")
    monkeypatch.delenv("FLUXION_TEST_MISSING", raising=False)
    sink = {"type": "file", "path": "${FLUXION_TEST_PW}/{{FLUXION_TEST_MISSING}}"}
    path = write("m.yaml", manifest(execution(sink=sink)))
    message = raises_at(failure(path), PlaceholderError, path, *EXEC, "sink", "path")
    assert "unresolved placeholder `{{FLUXION_TEST_MISSING}}`" in message
    assert "pw-value-123" not in message


def test_unresolved_secret_reference(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUXION_TEST_NOPE", raising=False)
    path = write(
        "m.yaml", manifest(execution(sink={"type": "file", "path": "secret://env/FLUXION_TEST_NOPE"}))
    )
    message = raises_at(failure(path), PlaceholderError, path, *EXEC, "sink", "path")
    assert "secret `secret://env/FLUXION_TEST_NOPE` cannot be resolved" in message


def test_unknown_secret_scheme(write: Write) -> None:
    path = write("m.yaml", manifest(execution(sink={"type": "file", "path": "secret://vault/x"})))
    error = failure(path)
    raises_at(error, PlaceholderError, path, *EXEC, "sink", "path")
    assert error.valid is not None and {"env", "file"} <= set(error.valid)


# ------------------------------------------------------------------ connections
def test_unknown_connection_ref(write: Write) -> None:
    conns = write("connections.yaml", [{"connectionRef": "orders-in", "config": {"type": "generator"}}])
    path = write("m.yaml", manifest(execution(source={"type": "generator", "connectionRef": "order-in"})))
    error = failure(path, connections=conns)
    message = raises_at(error, ConnectionsError, path, *EXEC, "source", "connectionRef")
    assert "unknown connectionRef `order-in`" in message
    assert "did you mean `orders-in`?" in message


def test_connection_ref_without_connections_file(write: Write) -> None:
    path = write("m.yaml", manifest(execution(source={"type": "generator", "connectionRef": "x"})))
    message = raises_at(failure(path), ConnectionsError, path, *EXEC, "source", "connectionRef")
    assert "no connections file was given" in message


def test_cross_tenant_connection_ref(write: Write) -> None:
    conns = write(
        "connections.yaml",
        [{"connectionRef": "gen", "scope": {"tenantId": "globex"}, "config": {"type": "generator"}}],
    )
    path = write(
        "m.yaml", manifest(execution(source={"type": "generator", "connectionRef": "gen"}), scope="acme::p")
    )
    message = raises_at(
        failure(path, connections=conns), ConnectionsError, path, *EXEC, "source", "connectionRef"
    )
    assert "exists only for tenant(s) globex" in message
    assert "never cross tenants" in message


def test_connection_type_mismatch(write: Write) -> None:
    conns = write("connections.yaml", [{"connectionRef": "out", "config": {"type": "file", "path": "o"}}])
    path = write("m.yaml", manifest(execution(sink={"type": "memory", "connectionRef": "out"})))
    message = raises_at(failure(path, connections=conns), ManifestError, path, *EXEC, "sink", "type")
    assert "is a `file` connection, but the block's type is `memory`" in message


# ------------------------------------------------------------------ structure
def test_next_on_a_non_pipeline_sink(write: Write) -> None:
    path = write("m.yaml", manifest(execution(sink={"type": "memory", "next": {"type": "stdout"}})))
    message = raises_at(failure(path), ManifestError, path, *EXEC, "sink", "next")
    assert "`next` is only valid on a sink of type `pipeline`" in message
    assert "`memory`" in message and "fanout" in message


def test_operation_that_is_not_streaming(write: Write) -> None:
    doc = manifest()
    doc["operationDefs"]["lookup"] = {"execution": {"type": "http", "url": "http://x"}}
    path = write("m.yaml", doc)
    error = failure(path, operation="lookup")
    message = raises_at(error, NotStreamingError, path, "operationDefs", "lookup", "execution", "type")
    assert "operation `lookup` is not a streaming operation (execution type `http`)" in message


def test_unknown_execution_type(write: Write) -> None:
    path = write("m.yaml", manifest(execution(type="streamin")))
    error = failure(path)
    message = raises_at(error, ManifestError, path, *EXEC, "type")
    assert "unknown execution type `streamin`" in message
    assert "did you mean `streaming`?" in message
    assert error.valid == sorted(
        ["streaming", "http", "javaBean", "pipelineCall", "webhook", "polling", "timer"]
    )


def test_missing_execution_type(write: Write) -> None:
    ex = execution()
    del ex["type"]
    path = write("m.yaml", manifest(ex))
    error = failure(path)
    message = raises_at(error, ManifestError, path, *EXEC, "type")
    assert "missing required key `type`" in message
    assert error.valid is not None and "streaming" in error.valid


@pytest.mark.parametrize(
    ("doc", "where", "suggestion"),
    [
        (manifest(runtme={"microBatchSize": 1}), ("runtme",), "runtime"),
        (manifest(operationDef={}), ("operationDef",), "operationDefs"),
        (manifest(errorPolcy="retry"), ("errorPolcy",), "errorPolicy"),
        (manifest(execution(sorce={})), (*EXEC, "sorce"), "source"),
        (
            manifest(execution(runtime={"microBatchSiz": 1})),
            (*EXEC, "runtime", "microBatchSiz"),
            "microBatchSize",
        ),
        (manifest(runtime={"maxBatchWiat": 1}), ("runtime", "maxBatchWiat"), "maxBatchWait"),
        (manifest(errorPolicy={"maxRetry": 1}), ("errorPolicy", "maxRetry"), "maxRetries"),
        (manifest(execution(errorPolicy={"polcy": "retry"})), (*EXEC, "errorPolicy", "polcy"), "policy"),
        (manifest(checkpoint={"intervall": 1}), ("checkpoint", "intervall"), "interval"),
        (
            manifest(execution(checkpoint={"everyDocument": 1})),
            (*EXEC, "checkpoint", "everyDocument"),
            "everyDocuments",
        ),
        (manifest(execution(process={"stage": []})), (*EXEC, "process", "stage"), "stages"),
    ],
    ids=[
        "root-runtime",
        "root-operationDefs",
        "root-errorPolicy",
        "execution",
        "execution-runtime",
        "runtime",
        "errorPolicy",
        "execution-errorPolicy",
        "checkpoint",
        "execution-checkpoint",
        "process",
    ],
)
def test_unknown_key_typos(
    write: Write, doc: dict[str, Any], where: tuple[str, ...], suggestion: str
) -> None:
    path = write("m.yaml", doc)
    error = failure(path)
    message = raises_at(error, ManifestError, path, *where)
    assert f"unknown key `{where[-1]}`" in message
    assert f"did you mean `{suggestion}`?" in message
    assert error.valid is not None and suggestion in error.valid


def test_typo_in_an_operation_definition(write: Write) -> None:
    doc = manifest()
    doc["operationDefs"]["orders"]["inputSchma"] = {"type": "object"}
    path = write("m.yaml", doc)
    message = raises_at(failure(path), ManifestError, path, "operationDefs", "orders", "inputSchma")
    assert "did you mean `inputSchema`?" in message


def test_error_policy_name_typo(write: Write) -> None:
    path = write("m.yaml", manifest(errorPolicy="skipAndContinu"))
    error = failure(path)
    message = raises_at(error, ManifestError, path, "errorPolicy")
    assert "did you mean `skipAndContinue`?" in message
    assert error.valid == ["deadLetter", "failFast", "retry", "skipAndContinue"]


def test_dead_letter_without_sink(write: Write) -> None:
    path = write("m.yaml", manifest(execution(errorPolicy={"policy": "retry", "then": "deadLetter"})))
    message = raises_at(failure(path), ManifestError, path, *EXEC, "errorPolicy")
    assert "needs `sink:`" in message


def test_invalid_duration_value(write: Write) -> None:
    path = write("m.yaml", manifest(runtime={"maxBatchWait": "soon"}))
    message = raises_at(failure(path), ManifestError, path, "runtime", "maxBatchWait")
    assert "ISO-8601 duration" in message and "'soon'" in message


def test_missing_required_block(write: Write) -> None:
    ex = execution()
    del ex["source"]
    path = write("m.yaml", manifest(ex))
    assert "missing required key `source`" in raises_at(failure(path), ManifestError, path, *EXEC, "source")


def test_missing_id(write: Write) -> None:
    doc = manifest()
    del doc["id"]
    path = write("m.yaml", doc)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    raises_at(caught.value, ManifestError, path, "id")


# ------------------------------------------------------------------ stages
def test_stage_spec_error_has_its_manifest_path(write: Write) -> None:
    process = {"type": "pipeline", "stages": [{"$match": {}}, {"$sett": {"a": 1}}]}
    path = write("m.yaml", manifest(execution(process=process)))
    message = raises_at(failure(path), StageError, path, *EXEC, "process", "stages", 1, "$sett")
    assert "process.stages[1].$sett" in message
    assert "did you mean `$set`?" in message


def test_stage_error_in_the_pipelines_map(write: Write) -> None:
    doc = manifest(
        execution(process={"pipeline": "p", "version": "1"}),
        pipelines={"p@1": {"stages": [{"$project": {"a": 1}}, {"$matc": {}}]}},
    )
    path = write("m.yaml", doc)
    raises_at(failure(path), StageError, path, "pipelines", "p@1", "stages", 1, "$matc")


def test_stage_error_in_a_pipeline_sink(write: Write) -> None:
    sink = {"type": "pipeline", "stages": [{"$unwnd": "$x"}], "next": {"type": "memory"}}
    path = write("m.yaml", manifest(execution(sink=sink)))
    raises_at(failure(path), StageError, path, *EXEC, "sink", "stages", 0, "$unwnd")
