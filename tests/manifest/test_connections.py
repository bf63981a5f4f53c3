"""Connections and templates files, connectionRef merging, tenant scopes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fluxion_flows.errors import ConnectionsError, ManifestError, OptionError
from fluxion_flows.manifest.connections import Connections, Scope
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.spi import Secret
from tests.manifest.util import execution, manifest, raises_at

Write = Callable[[str, Any], str]


def gen(ref: str, seed: int, scope: Any = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "connectionRef": ref,
        "connectorId": "gen",
        "config": {"type": "generator", "seed": seed},
    }
    if scope is not None:
        entry["scope"] = scope
    return entry


SCOPED = [
    gen("orders", 1),
    gen("orders", 2, {"tenantId": "acme", "pipelineId": "ingest"}),
    gen("orders", 3, {"tenantId": "acme"}),
    gen("orders", 4, "globex::ingest"),
    gen("only-globex", 5, "globex::default"),
]


def seed_for(write: Write, scope: str | None, ref: str = "orders", **block: Any) -> int:
    source = {"type": "generator", "connectionRef": ref, **block}
    doc = manifest(execution(source=source), **({"scope": scope} if scope else {}))
    pipeline = Pipeline.from_manifest(write("m.yaml", doc), connections=write("connections.yaml", SCOPED))
    return int(pipeline.source_config["seed"])


@pytest.mark.parametrize(
    ("scope", "seed"),
    [(None, 1), ("default::default", 1), ("acme::ingest", 2), ("acme::other", 3), ("globex::ingest", 4)],
)
def test_lookup_by_tenant_and_pipeline_with_tenant_wide_fallback(
    write: Write, scope: str | None, seed: int
) -> None:
    assert seed_for(write, scope) == seed


def test_lookup_never_crosses_tenants(write: Write) -> None:
    path = write(
        "m.yaml",
        manifest(execution(source={"type": "generator", "connectionRef": "orders"}), scope="initech::x"),
    )
    with pytest.raises(ConnectionsError) as caught:
        Pipeline.from_manifest(path, connections=write("connections.yaml", SCOPED))
    message = raises_at(
        caught.value,
        ConnectionsError,
        path,
        "operationDefs",
        "orders",
        "execution",
        "source",
        "connectionRef",
    )
    assert "exists only for tenant(s) acme, default, globex" in message


def test_unknown_ref_suggests_only_refs_of_the_same_tenant(write: Write) -> None:
    source = {"type": "generator", "connectionRef": "only-globx"}
    path = write("m.yaml", manifest(execution(source=source), scope="acme::x"))
    with pytest.raises(ConnectionsError) as caught:
        Pipeline.from_manifest(path, connections=write("connections.yaml", SCOPED))
    assert caught.value.valid == ["orders"]
    assert "did you mean" not in str(caught.value)


def test_scope_strings() -> None:
    scope = Scope.parse("acme::x")
    assert (scope.tenant, scope.pipeline) == ("acme", "x")
    assert str(Scope.parse(None)) == "default::default"
    assert str(Scope.parse("acme")) == "acme::default"


def test_block_connection_scope_overrides_the_manifest_scope(write: Write) -> None:
    assert seed_for(write, "acme::ingest", connectionScope="globex::ingest") == 4


def test_merge_order_connection_then_options_then_inline(write: Write) -> None:
    conns = write(
        "connections.yaml",
        [{"connectionRef": "g", "config": {"type": "generator", "seed": 1, "count": 1, "rate": 1.0}}],
    )
    source = {"type": "generator", "connectionRef": "g", "options": {"count": 2, "rate": 2.0}, "rate": 3.0}
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(source=source))), connections=conns)
    assert dict(pipeline.source_config.values) == {"seed": 1, "count": 2, "rate": 3.0}


def test_type_may_come_from_the_connection(write: Write) -> None:
    conns = write(
        "connections.yaml", [{"connectionRef": "out", "config": {"type": "file", "path": "o.jsonl"}}]
    )
    path = write("m.yaml", manifest(execution(sink={"connectionRef": "out"})))
    pipeline = Pipeline.from_manifest(path, connections=conns)
    assert pipeline.sink.config is not None
    assert (pipeline.sink.config.type, pipeline.sink.config["path"]) == ("file", "o.jsonl")


def test_option_error_points_into_the_connections_file(write: Write) -> None:
    conns = write(
        "connections.yaml", [gen("ok", 1), {"connectionRef": "g", "config": {"type": "generator", "cont": 2}}]
    )
    path = write("m.yaml", manifest(execution(source={"type": "generator", "connectionRef": "g"})))
    with pytest.raises(OptionError) as caught:
        Pipeline.from_manifest(path, connections=conns)
    message = raises_at(caught.value, OptionError, conns, 1, "config", "cont")
    assert "did you mean `count`?" in message


def test_connections_file_shape_errors(write: Write) -> None:
    not_a_list = write("c1.yaml", {"connectionRef": "x"})
    with pytest.raises(ConnectionsError) as caught:
        Connections.load(not_a_list)
    assert "must be a list of connections" in raises_at(caught.value, ConnectionsError, not_a_list)
    no_type = write("c2.yaml", [gen("a", 1), {"connectionRef": "b", "config": {"seed": 1}}])
    with pytest.raises(ConnectionsError) as caught:
        Connections.load(no_type)
    raises_at(caught.value, ConnectionsError, no_type, 1, "config", "type")
    typo = write("c3.yaml", [{"connectionRef": "b", "confg": {"type": "generator"}}])
    with pytest.raises(ManifestError) as caught_typo:
        Connections.load(typo)
    message = raises_at(caught_typo.value, ManifestError, typo, 0, "confg")
    assert "did you mean `config`?" in message


def test_connections_file_may_wrap_the_list(write: Write) -> None:
    wrapped = write("c.yaml", {"connections": [gen("a", 1)]})
    assert [c.connectionRef for c in Connections.load(wrapped).entries] == ["a"]


# ------------------------------------------------------------------ templates
TEMPLATES = [
    {
        "id": "gen",
        "displayName": "Generator",
        "category": "test",
        "executionType": "STREAMING",
        "sourceSchema": {
            "type": "object",
            "properties": {"seed": {"type": "integer", "minimum": 0}, "count": {"type": "integer"}},
            "required": ["seed"],
        },
    },
    {
        "id": "out",
        "sinkSchema": {
            "type": "object",
            "properties": {"path": {"type": "string", "x-secret": True}, "fsync": {"type": "boolean"}},
            "additionalProperties": False,
        },
    },
]


def load(write: Write, connections: list[dict[str, Any]], sink: dict[str, Any] | None = None) -> Pipeline:
    source = {"type": "generator", "connectionRef": "g"}
    doc = manifest(execution(source=source, sink=sink or {"type": "memory"}))
    return Pipeline.from_manifest(
        write("m.yaml", doc),
        connections=write("connections.yaml", connections),
        templates=write("templates.yaml", TEMPLATES),
    )


def test_connection_config_validated_against_its_template(write: Write) -> None:
    bad = [{"connectionRef": "g", "connectorId": "gen", "config": {"type": "generator", "seed": -1}}]
    with pytest.raises(ConnectionsError) as caught:
        load(write, bad)
    message = raises_at(caught.value, ConnectionsError, caught.value.file, 0, "config", "seed")
    assert caught.value.file is not None and caught.value.file.endswith("connections.yaml")
    assert "does not match template `gen`" in message and "minimum" in message


def test_template_required_and_type(write: Write) -> None:
    missing = [{"connectionRef": "g", "connectorId": "gen", "config": {"type": "generator", "count": 1}}]
    with pytest.raises(ConnectionsError, match="'seed' is a required property"):
        load(write, missing)
    wrong = [{"connectionRef": "g", "connectorId": "gen", "config": {"type": "generator", "seed": "one"}}]
    with pytest.raises(ConnectionsError, match="expected type integer"):
        load(write, wrong)


def test_template_accepts_placeholders_for_typed_values(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXION_TEST_SEED", "12")
    monkeypatch.setenv("FLUXION_TEST_FSYNC", "false")
    conns = [
        {
            "connectionRef": "g",
            "connectorId": "gen",
            "config": {"type": "generator", "seed": "${FLUXION_TEST_SEED}"},
        },
        {
            "connectionRef": "o",
            "connectorId": "out",
            "config": {"type": "file", "path": "p", "fsync": "${FLUXION_TEST_FSYNC}"},
        },
    ]
    pipeline = load(write, conns, sink={"type": "file", "connectionRef": "o"})
    assert pipeline.source_config["seed"] == 12
    assert pipeline.sink.config is not None and pipeline.sink.config["fsync"] is False
    monkeypatch.setenv("FLUXION_TEST_SEED", "twelve")
    with pytest.raises(ConnectionsError, match="expected type integer"):
        load(write, conns, sink={"type": "file", "connectionRef": "o"})


def test_x_secret_fields_become_secrets_and_secret_refs_validate(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXION_TEST_OUT_PATH", "/very/secret/path")
    conns = [
        {"connectionRef": "g", "connectorId": "gen", "config": {"type": "generator", "seed": 1}},
        {
            "connectionRef": "o",
            "connectorId": "out",
            "config": {"type": "file", "path": "${FLUXION_TEST_OUT_PATH}"},
        },
        {
            "connectionRef": "r",
            "connectorId": "out",
            "config": {"type": "file", "path": "secret://env/FLUXION_TEST_OUT_PATH"},
        },
    ]
    for ref in ("o", "r"):
        pipeline = load(write, conns, sink={"type": "file", "connectionRef": ref})
        assert pipeline.sink.config is not None
        value = pipeline.sink.config["path"]
        assert isinstance(value, Secret) and value.reveal() == "/very/secret/path"
        assert "/very/secret/path" not in repr(pipeline)
        assert pipeline.describe()["sinks"][0]["path"] == "***"


def test_template_violation_never_echoes_a_secret_value(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXION_TEST_OUT_PATH", "leaky-value")
    conns = [
        {"connectionRef": "g", "connectorId": "gen", "config": {"type": "generator", "seed": 1}},
        {
            "connectionRef": "o",
            "connectorId": "out",
            "config": {"type": "file", "path": "secret://env/FLUXION_TEST_OUT_PATH", "extra": 1},
        },
    ]
    with pytest.raises(ConnectionsError) as caught:
        load(write, conns, sink={"type": "file", "connectionRef": "o"})
    assert "leaky-value" not in str(caught.value)
    assert "does not match template `out`" in str(caught.value)


def test_templates_file_errors(write: Write) -> None:
    bad_schema = write("t.yaml", [{"id": "x", "sourceSchema": {"type": "nonsense"}}])
    with pytest.raises(ConnectionsError) as caught:
        Connections.load(templates=bad_schema)
    assert "not a valid JSON Schema" in raises_at(
        caught.value, ConnectionsError, bad_schema, 0, "sourceSchema"
    )
    not_a_list = write("t2.yaml", "id: x\n")
    with pytest.raises(ConnectionsError, match="must be a list of templates"):
        Connections.load(templates=not_a_list)
