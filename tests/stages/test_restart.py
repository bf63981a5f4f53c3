"""Checkpoint/restart: half a stream, snapshot through JSON, a fresh pipeline restores and finishes.

The combined output must equal an uninterrupted run: no aggregate loses or
double counts the documents delivered before the checkpoint.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from fluxion_flows.stages import Stage, compile_pipeline

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {"k": f"c{i % 3}", "x": i, "t": START + dt.timedelta(seconds=7 * i), "tags": ["a", "b"][: 1 + i % 2]}
        for i in range(n)
    ]


PIPELINES = {
    "group": [
        {"$unwind": "$tags"},
        {
            "$group": {
                "_id": "$k",
                "n": {"$count": {}},
                "total": {"$sum": "$x"},
                "avg": {"$avg": "$x"},
                "last": {"$last": "$t"},
                "tags": {"$addToSet": "$tags"},
                "sd": {"$stdDevPop": "$x"},
            }
        },
    ],
    "documents-window": [
        {
            "$setWindowFields": {
                "partitionBy": "$k",
                "sortBy": {"t": 1},
                "output": {
                    "around": {"$sum": "$x", "window": {"documents": [-2, 1]}},
                    "running": {"$sum": "$x", "window": {"documents": ["unbounded", "current"]}},
                    "rank": {"$rank": {}},
                    "prev": {"$shift": {"output": "$x", "by": -1}},
                    "ema": {"$expMovingAvg": {"input": "$x", "N": 3}},
                },
            }
        }
    ],
    "range-window": [
        {
            "$setWindowFields": {
                "sortBy": {"t": 1},
                "output": {"minute": {"$avg": "$x", "window": {"range": [-30, 30], "unit": "second"}}},
            }
        }
    ],
    "tumbling-window": [
        {
            "$setWindowFields": {
                "partitionBy": "$k",
                "sortBy": {"t": 1},
                "window": {"tumbling": {"size": 1, "unit": "minute"}},
                "output": {"n": {"$count": {}}, "max": {"$max": "$x"}},
            }
        }
    ],
    "sample-rate": [{"$sampleRate": {"rate": 0.3, "seed": 7}}],
}


def _run(stages: list[Stage], batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for batch in batches:
        docs = batch
        for stage in stages:
            docs = stage(docs)
        out.extend(docs)
    return out


def _flush(stages: list[Stage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for stage in stages:
        flush = getattr(stage, "flush", None)
        if flush is not None:
            out.extend(flush())
    return out


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_restart_resumes_exactly(name: str) -> None:
    events = _events(60)
    batches = [events[i : i + 7] for i in range(0, len(events), 7)]
    half = len(batches) // 2

    reference = compile_pipeline(PIPELINES[name])
    expected = _run(reference, batches) + _flush(reference)

    first = compile_pipeline(PIPELINES[name])
    before = _run(first, batches[:half])
    checkpoint = json.dumps([stage.snapshot() for stage in first])  # what the executor stores

    second = compile_pipeline(PIPELINES[name])
    for stage, state in zip(second, json.loads(checkpoint), strict=True):
        stage.restore(state)
    after = _run(second, batches[half:]) + _flush(second)

    assert before + after == expected
    assert any(stage.stateful for stage in first)


def test_group_state_size_and_bound() -> None:
    (group,) = compile_pipeline([{"$group": {"_id": "$k", "n": {"$sum": 1}}}], max_keys=2)
    group([{"k": 1}, {"k": 2}, {"k": 1}])
    assert group.state_size() == 2
    with pytest.raises(Exception, match="maxKeys=2"):
        group([{"k": 3}])


def test_restore_then_continue_counts_once() -> None:
    (group,) = compile_pipeline([{"$group": {"_id": None, "n": {"$sum": 1}}}])
    group([{}] * 5)
    saved = json.loads(json.dumps(group.snapshot()))
    (restarted,) = compile_pipeline([{"$group": {"_id": None, "n": {"$sum": 1}}}])
    restarted.restore(saved)
    assert restarted([{}] * 2) == [{"_id": None, "n": 7}]
