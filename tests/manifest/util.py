"""Helpers for manifest and CLI tests: manifest builders, error assertions, a provider with secrets."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from fluxion_flows.errors import FluxionError
from fluxion_flows.spi import (
    Batch,
    ConnectorConfig,
    ConnectorDescriptor,
    ConnectorOption,
    OptionSchema,
    OptionType,
    SinkContext,
    SinkProvider,
    StreamingSink,
)

SECRET_VALUE = "s3cr3t-Value-9f2c"
"""Never allowed to appear in a describe(), a repr or an error message."""


class _NullSink(StreamingSink):
    async def write(self, batch: Batch) -> None:
        return None


class VaultSinkProvider(SinkProvider):
    """A sink with a secret option and typed options, registered only in these tests."""

    def descriptor(self) -> ConnectorDescriptor:
        return ConnectorDescriptor("vault", "Vault test sink")

    def options(self) -> OptionSchema:
        return OptionSchema(
            [
                ConnectorOption("user", OptionType.STRING, required=True),
                ConnectorOption("password", OptionType.SECRET, required=True),
                ConnectorOption("token", OptionType.STRING, secret=True),
                ConnectorOption("retries", OptionType.INT, default=3),
                ConnectorOption("timeout", OptionType.DURATION, default="PT1S"),
            ]
        )

    def create(self, context: SinkContext, config: ConnectorConfig) -> StreamingSink:
        return _NullSink()


def execution(**blocks: Any) -> dict[str, Any]:
    """A runnable streaming execution (generator → memory) with blocks replaced."""
    base: dict[str, Any] = {
        "type": "streaming",
        "source": {"type": "generator", "count": 5},
        "sink": {"type": "memory"},
    }
    base.update(blocks)
    return base


def manifest(execution_: dict[str, Any] | None = None, name: str = "orders", **root: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "test-bundle",
        "operationDefs": {name: {"execution": execution_ or execution()}},
    }
    doc.update(root)
    return doc


def writer(directory: Path) -> Callable[[str, Any], str]:
    """A function writing a document (YAML, or JSON for *.json) into ``directory``; returns its path."""

    def _write(name: str, document: Any) -> str:
        path = directory / name
        if isinstance(document, str):
            path.write_text(document, encoding="utf-8")
        elif name.endswith(".json"):
            path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(copy.deepcopy(document), sort_keys=False), encoding="utf-8")
        return str(path)

    return _write


def raises_at(error: FluxionError, kind: type[FluxionError], file: str | None, *path: str | int) -> str:
    """Assert the error's class, file and path; return the message for further checks."""
    assert isinstance(error, kind), f"{type(error).__name__}: {error}"
    assert error.file == file, error
    assert error.path == tuple(path), error
    message = str(error)
    assert "Traceback" not in message
    if file is not None:
        assert message.startswith(f"{file}: ")
    return message
