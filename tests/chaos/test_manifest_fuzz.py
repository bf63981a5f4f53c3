"""Manifest fuzzing: malformed manifests and option maps give a FluxionError with a path, nothing else.

Each example starts from a valid manifest (a source, stages, a sink, runtime,
error policy and checkpoint blocks drawn from realistic choices) and applies
one to three near-miss mutations of the kinds users actually make: a wrong
type, an unknown (often typo'd) key, a missing key, a bad duration, an
unknown provider, a missing required option, a bad placeholder, a bad stage.
Some examples stay valid, and must then load. Loading goes through
``Pipeline.from_manifest`` in-process (manifest model, plan, registry option
validation, placeholder resolution, stage compilation) without connecting
to anything. A second property fuzzes the option maps each provider
validates (``ProviderRegistry.configure``) directly.

Runs are derandomized (the same examples on every run); ``FLUXION_FUZZ_EXAMPLES``
scales them (CI runs at least 10,000 in total).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxion_flows.errors import FluxionError
from fluxion_flows.pipeline import Pipeline
from fluxion_flows.registry import default_registry
from fluxion_flows.spi import ConnectorKind

EXAMPLES = int(os.environ.get("FLUXION_FUZZ_EXAMPLES", "7000"))
OPTION_EXAMPLES = int(os.environ.get("FLUXION_FUZZ_OPTION_EXAMPLES", "3000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

SOURCES: list[dict[str, Any]] = [
    {
        "type": "file",
        "path": "/tmp/fuzz-in.jsonl",
        "format": "jsonl",
        "follow": False,
        "pollInterval": "PT0.2S",
    },
    {"type": "generator", "count": 10, "seed": 1, "rate": 100.0},
    {
        "type": "kafka",
        "bootstrapServers": "127.0.0.1:9092",
        "topic": "orders",
        "groupId": "g",
        "pollTimeout": "500ms",
        "session.timeout.ms": 2000,
    },
    {
        "type": "kafka",
        "bootstrapServers": "b:9092",
        "topicPattern": "orders-.*",
        "securityProtocol": "SASL_SSL",
        "saslMechanism": "PLAIN",
        "saslUsername": "u",
        "saslPassword": "secret://env/FUZZ_SECRET",
    },
]
SINKS: list[dict[str, Any]] = [
    {"type": "file", "path": "/tmp/fuzz-out.jsonl", "fsync": False},
    {"type": "memory", "name": "fuzz"},
    {"type": "stdout"},
    {
        "type": "http",
        "endpoint": "http://127.0.0.1:8080/in",
        "retry": {"maxAttempts": 3, "waitDuration": "PT0.1S"},
        "timeout": {"connect": "PT2S", "read": 5},
        "headers": {"X-A": "b"},
        "format": "ndjson",
    },
    {
        "type": "http",
        "urlTemplate": "http://h/{tenant}/x",
        "bearerToken": "secret://env/FUZZ_SECRET",
        "circuitBreaker": {"failureRateThreshold": 50, "slidingWindowType": "time"},
    },
    {
        "type": "kafka",
        "bootstrapServers": "127.0.0.1:9092",
        "topic": "out",
        "acks": "all",
        "keyField": "id",
        "linger": "5ms",
    },
    {"type": "pipeline", "stages": [{"$set": {"x": 1}}], "next": {"type": "memory", "name": "n"}},
    {"type": "file", "path": "/tmp/a.jsonl", "fanout": [{"type": "memory"}, {"type": "stdout"}]},
]
STAGES: list[dict[str, Any]] = [
    {"$match": {"status": "PAID", "total": {"$gte": 10}}},
    {"$set": {"tax": {"$round": [{"$multiply": ["$total", 0.08]}, 2]}, "n": {"$toInt": "$qty"}}},
    {"$project": {"_id": 0, "orderId": 1, "tier": "$customer.tier"}},
    {"$unset": ["_meta"]},
    {"$group": {"_id": "$customerId", "total": {"$sum": "$total"}, "n": {"$count": {}}}},
    {"$unwind": {"path": "$items", "preserveNullAndEmptyArrays": True}},
    {"$replaceRoot": {"newRoot": {"$mergeObjects": ["$$ROOT", {"k": 1}]}}},
    {"$sampleRate": {"rate": 0.5, "seed": 3}},
    {"$match": {"$expr": {"$gt": [{"$size": {"$ifNull": ["$items", []]}}, 1]}}},
    {"$set": {"d": {"$dateToString": {"date": "$$NOW", "format": "%Y"}}}},
    {"$limit": 5},
    {"$sort": {"total": -1}},
    {
        "$setWindowFields": {
            "partitionBy": "$c",
            "sortBy": {"t": 1},
            "output": {"s": {"$sum": "$v", "window": {"documents": [-2, 0]}}},
        }
    },
]
BAD_STAGES: list[Any] = [
    {},
    {"$match": 5},
    {"$set": []},
    {"$group": {"total": {"$sum": 1}}},
    {"$set": {"a": {"$toInt": [1, 2, 3]}}},
    {"$project": {"a": "$$UNKNOWN"}},
    {"$unwind": 5},
    {"$limit": -1},
    {"$sort": {"a": 2}},
    {"$merge": {}},
    {"$match": {}, "$set": {}},
    {"$function": {"body": "os.system", "args": []}},
    {"$nope": {}},
    {"$set": {"a": {"$add": "x"}}},
    {"$set": {"$a": 1}},
    {"$set": {"a.": 1}},
    {"$match": {"$where": "1"}},
    {"$group": {"_id": None, "x": {"$push": "$a", "$sum": 1}}},
    {"$set": {"a": {"$cond": [1]}}},
    {"$set": {"a": {"$switch": {"branches": 3}}}},
    {"$match": {"a": {"$regex": "("}}},
    {"$set": {"a": {"$regexMatch": {"input": "$a", "regex": "["}}}},
    {"$bucket": {"groupBy": "$a"}},
    {"$setWindowFields": {"output": {"s": {"$sum": "$v", "window": {"documents": ["x", 0]}}}}},
    {"$sampleRate": 2},
    {"$sampleRate": {"rate": "x"}},
    {"$subPipeline": {"steps": 5}},
    {"$facet": []},
    {"$set": {"a": {"$let": {"vars": {"1x": 1}, "in": "$$1x"}}}},
    {"$set": {"a": {"$map": {"input": 1}}}},
    {"$set": {"a": {"$dateAdd": {"startDate": "$d", "unit": "fortnight", "amount": 1}}}},
    "$match",
    5,
    None,
    {"$set": {"a": {"$literal": [1]}, "b": {"$getField": {"field": 5}}}},
    {"$densify": {"field": "a"}},
    {"$replaceRoot": {"newRoot": 5}},
    {"$skip": "x"},
    {"$count": ""},
    {"$sortByCount": 3},
]
BAD_DURATIONS: list[Any] = [
    "PT",
    "P",
    "5 sec",
    "-1",
    -1,
    "P1Y",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "PT-1S",
    True,
    "ms",
    "1.5.2s",
    "PT1.S",
    "P1DT",
    "",
    " ",
    "10x",
    float("nan"),
    float("inf"),
    1e308,
    [1],
    {"s": 1},
    "P1W",
    "1h30m",
    "٣s",
]
BAD_PLACEHOLDERS: list[str] = [
    "${",
    "${UNSET_FUZZ_VARIABLE}",
    "{{ nope }}",
    "secret://nope/x",
    "secret://env/UNSET_FUZZ_SECRET",
    "${A:-",
    "{{",
    "secret://",
    "${1BAD}",
    "{{prefect.blocks.secret.x}}",
    "secret://file/nonexistent/fuzz",
    "${A:-}x{{B}}",
    "secret://env/",
    "secret://ENV/X",
    "$${HOME}",
    "{{ {{x}} }}",
    "${HOME",
]
BAD_TYPES: list[Any] = [
    "kafak",
    "",
    "Kafka",
    "http2",
    "pipeline",
    "mongo",
    123,
    None,
    ["file"],
    {"type": "file"},
]
KEYS_TO_DROP = [
    "type",
    "path",
    "endpoint",
    "bootstrapServers",
    "topic",
    "source",
    "sink",
    "execution",
    "stages",
    "id",
]


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from walk(value, (*path, index))


def parent(document: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
junk = st.one_of(
    scalars,
    st.sampled_from(BAD_DURATIONS + BAD_PLACEHOLDERS + BAD_TYPES + BAD_STAGES),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 3)), scalars, max_size=3),
)


def typo(key: str, data: st.DataObject) -> str:
    if len(key) < 2:
        return key + "x"
    i = data.draw(st.integers(0, len(key) - 2))
    edits = [key[:i] + key[i + 1 :], key[:i] + key[i + 1] + key[i] + key[i + 2 :], key.lower(), key + "s"]
    return data.draw(st.sampled_from([e for e in edits if e != key] or [key + "x"]))


def fresh(data: st.DataObject, strategy: st.SearchStrategy[Any]) -> Any:
    """A drawn value the document owns (shared constants must never be mutated by later mutations)."""
    return copy.deepcopy(data.draw(strategy))


def mutate(document: dict[str, Any], data: st.DataObject) -> None:
    paths = list(walk(document))
    kind = data.draw(
        st.sampled_from(
            [
                "value",
                "drop",
                "unknown-key",
                "stage",
                "type",
                "duration",
                "placeholder",
                "required",
                "typo-key",
            ]
        )
    )
    if kind in ("value", "drop", "unknown-key", "typo-key"):
        path = data.draw(st.sampled_from(paths))
        container = parent(document, path)
        if kind == "value":
            container[path[-1]] = fresh(data, junk)
        elif kind == "drop":
            del container[path[-1]]
        elif isinstance(container, dict):
            name = (
                typo(str(path[-1]), data)
                if kind == "typo-key"
                else data.draw(st.text(min_size=1, max_size=10))
            )
            container[name] = fresh(data, junk) if kind == "unknown-key" else container[path[-1]]
            if kind == "typo-key":
                del container[path[-1]]
    elif kind == "stage":
        stages = _find(document, "stages")
        if isinstance(stages, list):
            at = data.draw(st.integers(0, len(stages)))
            stages.insert(at, fresh(data, st.sampled_from(BAD_STAGES)))
    elif kind in ("type", "duration", "placeholder", "required"):
        choices = {
            "type": [p for p in paths if p[-1] == "type"],
            "duration": [p for p in paths if _is_duration_key(p[-1])],
            "placeholder": [p for p in paths if isinstance(parent(document, p)[p[-1]], str)],
            "required": [p for p in paths if p[-1] in KEYS_TO_DROP],
        }[kind]
        if not choices:
            return
        path = data.draw(st.sampled_from(choices))
        container = parent(document, path)
        if kind == "type":
            container[path[-1]] = fresh(data, st.sampled_from(BAD_TYPES))
        elif kind == "duration":
            container[path[-1]] = fresh(data, st.sampled_from(BAD_DURATIONS))
        elif kind == "placeholder":
            container[path[-1]] = container[path[-1]] + data.draw(st.sampled_from(BAD_PLACEHOLDERS))
        else:
            del container[path[-1]]


def _is_duration_key(key: Any) -> bool:
    names = ("Wait", "wait", "interval", "Interval", "Timeout", "timeout", "Backoff", "linger", "Duration")
    return isinstance(key, str) and any(n in key for n in names)


def _find(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        if key in node:
            return node[key]
        for value in node.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    execution: dict[str, Any] = {
        "type": "streaming",
        "source": copy.deepcopy(draw(st.sampled_from(SOURCES))),
        "process": {
            "type": "pipeline",
            "stages": copy.deepcopy(draw(st.lists(st.sampled_from(STAGES), max_size=3))),
        },
        "sink": copy.deepcopy(draw(st.sampled_from(SINKS))),
    }
    if draw(st.booleans()):
        execution["runtime"] = {"microBatchSize": 100, "maxBatchWait": "PT0.1S", "queueCapacity": 500}
    if draw(st.booleans()):
        execution["errorPolicy"] = draw(
            st.sampled_from(
                [
                    "skipAndContinue",
                    {
                        "policy": "retry",
                        "maxRetries": 3,
                        "initialBackoff": "100ms",
                        "then": "skipAndContinue",
                    },
                    {"policy": "deadLetter", "sink": {"type": "file", "path": "/tmp/dlq.jsonl"}},
                ]
            )
        )
    execution["checkpoint"] = {"store": "memory", "interval": "PT1S", "everyDocuments": 100}
    return {
        "schemaVersion": "1.0.0",
        "id": "fuzz",
        "version": "1.0.0",
        "operationDefs": {"op": {"operationId": "op", "kind": "trigger", "execution": execution}},
    }


COUNTS = {"manifests": 0, "valid": 0, "options": 0}


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZ_SECRET", "s3cr3t-fuzz")
    monkeypatch.delenv("UNSET_FUZZ_SECRET", raising=False)
    monkeypatch.delenv("UNSET_FUZZ_VARIABLE", raising=False)


def check_loads_or_explains(document: dict[str, Any]) -> bool:
    """True when the manifest loaded; a FluxionError must carry a path; anything else propagates (a bug)."""
    try:
        Pipeline.from_manifest(document)
    except FluxionError as error:
        assert error.path, f"{type(error).__name__} without a path: {error}"
        assert str(error)
        return False
    return True


@pytest.mark.slow
def test_malformed_manifests_give_fluxion_errors_with_a_path() -> None:
    started = time.monotonic()

    @FUZZ
    @given(manifests(), st.data())
    def fuzz(document: dict[str, Any], data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(0, 3))):
            mutate(document, data)
        COUNTS["manifests"] += 1
        COUNTS["valid"] += check_loads_or_explains(document)

    fuzz()
    print(
        f"manifest fuzz: {COUNTS['manifests']} manifests ({COUNTS['valid']} valid) "
        f"in {time.monotonic() - started:.1f}s"
    )
    assert COUNTS["manifests"] >= EXAMPLES


PROVIDERS = [(ConnectorKind.SOURCE, block) for block in SOURCES] + [
    (ConnectorKind.SINK, block) for block in SINKS if block["type"] != "pipeline"
]


@pytest.mark.slow
def test_malformed_option_maps_give_option_errors_with_a_path() -> None:
    registry = default_registry()
    started = time.monotonic()

    @settings(FUZZ, max_examples=OPTION_EXAMPLES)
    @given(st.sampled_from(PROVIDERS), st.data())
    def fuzz(provider: tuple[ConnectorKind, dict[str, Any]], data: st.DataObject) -> None:
        kind, block = provider
        options = copy.deepcopy({k: v for k, v in block.items() if k not in ("type", "fanout")})
        wrapper = {"options": options}
        for _ in range(data.draw(st.integers(1, 3))):
            if any(True for _ in walk(wrapper)):
                mutate(wrapper, data)
        raw = wrapper.get("options")
        COUNTS["options"] += 1
        try:
            registry.configure(kind, str(block["type"]), raw if isinstance(raw, dict) else {}, path=("sink",))
        except FluxionError as error:
            assert error.path, f"{type(error).__name__} without a path: {error}"

    fuzz()
    print(f"option fuzz: {COUNTS['options']} option maps in {time.monotonic() - started:.1f}s")
    assert COUNTS["options"] >= OPTION_EXAMPLES
