"""Placeholders are resolved only when connectors are configured; secrets never leak."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fluxion_flows.errors import FluxionError, OptionError, PlaceholderError
from fluxion_flows.manifest.loader import load_manifest
from fluxion_flows.manifest.placeholders import Resolver, placeholders_in
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import ProviderRegistry
from fluxion_flows.spi import Secret
from tests.manifest.util import SECRET_VALUE, execution, manifest, raises_at

Write = Callable[[str, Any], str]
EXEC = ("operationDefs", "orders", "execution")


# ------------------------------------------------------------------ resolution
def test_env_placeholders_with_and_without_default() -> None:
    resolver = Resolver(environ={"HOST": "db", "PORT": "5432"})
    assert resolver.resolve("${HOST}:${PORT}/${DB:-orders}") == "db:5432/orders"
    assert resolver.resolve("${EMPTY:-}") == ""


def test_mustache_reads_variables_before_the_environment() -> None:
    resolver = Resolver(variables={"TOPIC": "from-var"}, environ={"TOPIC": "from-env", "ONLY_ENV": "e"})
    assert resolver.resolve("{{TOPIC}}/{{ ONLY_ENV }}") == "from-var/e"


def test_resolution_walks_maps_and_lists_and_keeps_other_types() -> None:
    resolver = Resolver(environ={"A": "1"})
    assert resolver.resolve({"x": ["${A}", {"y": "{{A}}"}], "n": 3, "b": True}) == {
        "x": ["1", {"y": "1"}],
        "n": 3,
        "b": True,
    }


def test_a_substituted_value_is_not_expanded_again() -> None:
    resolver = Resolver(variables={"N": "${HOST}"}, environ={"HOST": "h", "RAW": "a{{N}}b"})
    assert resolver.resolve("{{N}}") == "${HOST}"
    assert resolver.resolve("${RAW}") == "a{{N}}b"


def test_secret_env_and_file_references(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET_VALUE + "\n")
    resolver = Resolver(environ={})
    from_file = resolver.resolve(f"secret://file{secret_file}")
    assert isinstance(from_file, Secret) and from_file.reveal() == SECRET_VALUE


def test_secret_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXION_TEST_SECRET", SECRET_VALUE)
    value = Resolver().resolve("secret://env/FLUXION_TEST_SECRET")
    assert isinstance(value, Secret) and value.reveal() == SECRET_VALUE
    assert SECRET_VALUE not in repr(value) + str(value) + f"{value}"


def test_placeholders_in_lists_references_without_resolving() -> None:
    found = placeholders_in({"a": "${X}-{{Y}}", "b": ["secret://env/Z"], "c": 1})
    assert found == ["${X}", "{{Y}}", "secret://env/Z"]


def test_loading_a_manifest_resolves_nothing(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUXION_TEST_UNSET", raising=False)
    sink = {"type": "file", "path": "${FLUXION_TEST_UNSET}", "fsync": "secret://env/FLUXION_TEST_UNSET"}
    loaded = load_manifest(write("m.yaml", manifest(execution(sink=sink))))
    assert loaded.manifest.operationDefs["orders"].execution.sink["path"] == "${FLUXION_TEST_UNSET}"  # type: ignore[union-attr]


def test_placeholders_resolve_in_every_option_position(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXION_TEST_SEED", "7")
    monkeypatch.setenv("FLUXION_TEST_DIR", "out")
    ex = execution(
        source={"type": "generator", "options": {"seed": "${FLUXION_TEST_SEED}"}, "count": "{{COUNT}}"},
        sink={"type": "file", "path": "${FLUXION_TEST_DIR}/{{NAME}}.jsonl"},
    )
    pipeline = Pipeline.from_manifest(
        write("m.yaml", manifest(ex)), variables={"COUNT": "3", "NAME": "orders"}
    )
    assert dict(pipeline.source_config.values) == {"seed": 7, "count": 3}
    assert pipeline.sink.config is not None and pipeline.sink.config["path"] == "out/orders.jsonl"


# ------------------------------------------------------------------ secrets never leak
@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUXION_TEST_PASSWORD", SECRET_VALUE)
    monkeypatch.setenv("FLUXION_TEST_TOKEN", SECRET_VALUE + "-token")


def vault_sink(**extra: Any) -> dict[str, Any]:
    return {"type": "vault", "user": "app", "password": "secret://env/FLUXION_TEST_PASSWORD", **extra}


def test_secret_options_are_secrets_and_never_printed(
    write: Write, registry: ProviderRegistry, secret_env: None
) -> None:
    sink = vault_sink(token="${FLUXION_TEST_TOKEN}")
    pipeline = Pipeline.from_manifest(write("m.yaml", manifest(execution(sink=sink))), registry=registry)
    config = pipeline.sink.config
    assert config is not None
    assert isinstance(config["password"], Secret) and config["password"].reveal() == SECRET_VALUE
    assert isinstance(config["token"], Secret) and config["token"].reveal() == SECRET_VALUE + "-token"
    assert config.redacted() == {
        "type": "vault",
        "user": "app",
        "password": "***",
        "token": "***",
        "retries": 3,
        "timeout": 1.0,
    }
    shown = [repr(pipeline), str(pipeline.describe()), repr(config), str(config.values), repr(pipeline.plan)]
    for text in shown:
        assert SECRET_VALUE not in text


def test_secret_in_the_dead_letter_sink_is_redacted(
    write: Write, registry: ProviderRegistry, secret_env: None
) -> None:
    doc = manifest(errorPolicy={"policy": "deadLetter", "sink": vault_sink()})
    pipeline = Pipeline.from_manifest(write("m.yaml", doc), registry=registry)
    assert pipeline.describe()["deadLetter"]["password"] == "***"
    assert SECRET_VALUE not in repr(pipeline)


@pytest.mark.parametrize(
    ("sink", "kind", "where"),
    [
        (vault_sink(retries="lots"), OptionError, ("retries",)),
        (vault_sink(retrys=1), OptionError, ("retrys",)),
        (vault_sink(user=["x"]), OptionError, ("user",)),
        (vault_sink(password=["not", "a", "string"]), OptionError, ("password",)),
        (
            vault_sink(token="secret://env/FLUXION_TEST_PASSWORD", timeout="{{NOT_SET_ANYWHERE}}"),
            PlaceholderError,
            ("timeout",),
        ),
        (vault_sink(token="${FLUXION_TEST_PASSWORD}:{{NOT_SET_ANYWHERE}}"), PlaceholderError, ("token",)),
    ],
    ids=[
        "wrong-type",
        "unknown",
        "wrong-type-user",
        "secret-wrong-type",
        "placeholder",
        "placeholder-beside-secret",
    ],
)
def test_errors_beside_secrets_never_contain_them(
    write: Write,
    registry: ProviderRegistry,
    secret_env: None,
    sink: dict[str, Any],
    kind: type[FluxionError],
    where: tuple[str, ...],
) -> None:
    path = write("m.yaml", manifest(execution(sink=sink)))
    with pytest.raises(FluxionError) as caught:
        Pipeline.from_manifest(path, registry=registry)
    message = raises_at(caught.value, kind, path, *EXEC, "sink", *where)
    assert SECRET_VALUE not in message
    assert SECRET_VALUE not in repr(caught.value)


def test_a_secret_used_where_a_number_is_expected_is_not_shown(
    write: Write, registry: ProviderRegistry, secret_env: None
) -> None:
    path = write("m.yaml", manifest(execution(sink=vault_sink(retries="secret://env/FLUXION_TEST_PASSWORD"))))
    with pytest.raises(OptionError) as caught:
        Pipeline.from_manifest(path, registry=registry)
    assert SECRET_VALUE not in str(caught.value)
