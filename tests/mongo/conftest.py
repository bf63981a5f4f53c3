"""Fixtures for the MongoDB connector tests: a real nx-27017 server on loopback.

One server (file-backed ``--data-dir``) serves the whole session; every test
works in its own database, so tests neither share state nor depend on order.
Tests that restart the server get their own instance.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fluxion_connect_mongo import MongoSinkProvider, MongoSourceProvider
from pymongo import AsyncMongoClient

from fluxion_flows.spi import (
    ConnectorConfig,
    ConnectorKind,
    Document,
    StreamingSource,
)
from tests.support.mongo_server import MongoServer, running_mongo


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    with running_mongo(tmp_path_factory.mktemp("nx27017") / "data") as server:
        yield server


@pytest.fixture
def own_mongo_server(tmp_path: Path) -> Iterator[MongoServer]:
    """A server of this test's own, for tests that stop or restart it."""
    with running_mongo(tmp_path / "data") as server:
        yield server


@pytest.fixture
def db_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(mongo_server: MongoServer) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    yield mongo
    await mongo.close()


def source_config(uri: str, **values: Any) -> ConnectorConfig:
    """A validated source block, as the registry would build it."""
    raw = {"connectionString": uri, **values}
    typed, props = MongoSourceProvider().options().validate(raw)
    return ConnectorConfig("mongodb", ConnectorKind.SOURCE, typed, props, path="source")


def sink_config(uri: str, **values: Any) -> ConnectorConfig:
    raw = {"connectionString": uri, **values}
    typed, props = MongoSinkProvider().options().validate(raw)
    return ConnectorConfig("mongodb", ConnectorKind.SINK, typed, props, path="sink")


async def read_documents(
    source: StreamingSource, count: int, *, deadline: float = 20.0
) -> tuple[list[Document], dict[str, Any]]:
    """Batches until ``count`` documents arrived (or the deadline passed): documents, last positions."""
    documents: list[Document] = []
    positions: dict[str, Any] = {}
    limit = time.monotonic() + deadline
    while len(documents) < count and time.monotonic() < limit:
        batch = await source.next_batch(1000, 0.5)
        if batch is None:
            break
        documents.extend(batch.documents)
        positions.update(batch.positions)
    return documents, positions


async def read_until(
    source: StreamingSource, done: Any, *, deadline: float = 30.0
) -> tuple[list[Document], dict[str, Any]]:
    """Pull batches until ``done(document)`` is true for a delivered document (or the deadline passes)."""
    documents: list[Document] = []
    positions: dict[str, Any] = {}
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        batch = await source.next_batch(1000, 0.5)
        if batch is None:
            break
        documents.extend(batch.documents)
        positions.update(batch.positions)
        if any(done(d) for d in batch.documents):
            break
    return documents, positions


async def wait_for(predicate: Any, *, deadline: float = 30.0, interval: float = 0.05) -> None:
    """Await an async predicate becoming true, failing the test after ``deadline`` seconds."""
    limit = time.monotonic() + deadline
    while time.monotonic() < limit:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {deadline}s")
