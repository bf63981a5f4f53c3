"""Engine-level behaviour: API shape, errors, input immutability, $$NOW, state codec."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from decimal import Decimal

import pytest

from fluxion_flows.errors import StageError
from fluxion_flows.stages import Stage, StageRuntimeError, compile_pipeline
from fluxion_flows.stages.state import decode, encode
from fluxion_flows.stages.values import MISSING, compare, type_name


def test_stage_names_and_paths() -> None:
    stages = compile_pipeline(
        [{"$match": {"a": 1}}, {"$set": {"b": 1}}, {"$group": {"_id": None}}],
        file="orders.yaml",
        path=("pipelines", "orders@1", "stages"),
    )
    assert [s.name for s in stages] == ["$match", "$set", "$group"]
    assert [s.path for s in stages] == [f"pipelines.orders@1.stages[{i}]" for i in range(3)]
    assert all(isinstance(s, Stage) for s in stages)
    assert [s.stateful for s in stages] == [False, False, True]


def test_error_message_reads_well() -> None:
    with pytest.raises(StageError) as info:
        compile_pipeline(
            [{"$match": {}}, {"$match": {}}, {"$set": {"net": {"$sbustract": ["$a", "$b"]}}}],
            file="orders.yaml",
            path=("pipelines", "orders@1", "stages"),
        )
    assert str(info.value) == (
        "orders.yaml: pipelines.orders@1.stages[2].$set.net.$sbustract: unknown operator `$sbustract`; "
        "did you mean `$subtract`?"
    )
    assert info.value.path == ("pipelines", "orders@1", "stages", 2, "$set", "net", "$sbustract")


def test_runtime_error_names_operator_and_path() -> None:
    (stage,) = compile_pipeline([{"$set": {"r": {"$toInt": "$a"}}}], path=("p", "stages"))
    with pytest.raises(StageRuntimeError) as info:
        stage([{"a": "abc"}])
    assert info.value.operator == "$toInt"
    assert info.value.path == "p.stages[0].$set.r.$toInt"


def test_input_documents_are_not_mutated() -> None:
    docs = [{"_id": 1, "a": {"b": 1}, "arr": [{"x": 1}], "s": [1, 2]}]
    before = copy.deepcopy(docs)
    pipeline = [
        {"$set": {"a.c": 2, "arr.y": 3}},
        {"$unset": "a.b"},
        {"$unwind": "$s"},
        {"$fill": {"output": {"z": {"value": 1}}}},
    ]
    stages = compile_pipeline(pipeline)
    out = docs
    for stage in stages:
        out = stage(out)
    assert docs == before
    assert out[0]["a"] == {"c": 2}


def test_now_is_constant_within_a_batch() -> None:
    (stage,) = compile_pipeline([{"$set": {"now": "$$NOW"}}])
    out = stage([{} for _ in range(200)])
    assert len({d["now"] for d in out}) == 1
    assert out[0]["now"].tzinfo is not None


def test_function_needs_opt_in_and_reference() -> None:
    spec = [{"$set": {"h": {"$function": {"body": "math:hypot", "args": [3, 4]}}}}]
    with pytest.raises(StageError, match="disabled"):
        compile_pipeline(spec)
    (stage,) = compile_pipeline(spec, allow_functions=True)
    assert stage([{}]) == [{"h": 5.0}]
    with pytest.raises(StageError, match="never evaluated"):
        compile_pipeline(
            [{"$set": {"h": {"$function": {"body": "__import__('os')", "args": []}}}}], allow_functions=True
        )


def test_sample_rate_seed_42_matches_reference() -> None:
    draws = random.Random(42)
    kept = [event for event in (1, 2, 3, 4) if draws.random() <= 0.5]
    assert kept == [2, 3, 4]
    (stage,) = compile_pipeline([{"$sampleRate": {"rate": 0.5, "seed": 42}}])
    assert [d["e"] for d in stage([{"e": e} for e in (1, 2, 3, 4)])] == [2, 3, 4]


def test_state_codec_round_trips_through_json() -> None:
    value = {
        "d": dt.datetime(2020, 1, 2, 3, 4, 5, 6000, tzinfo=dt.UTC),
        "dec": Decimal("1.10"),
        "nan": float("nan"),
        "b": b"\x00\x01",
        "$weird": {"$date": "not a date"},
        "list": [1, 2.5, None, "x"],
    }
    back = decode(json.loads(json.dumps(encode(value))))
    assert back["d"] == value["d"]
    assert back["dec"] == Decimal("1.10")
    assert back["nan"] != back["nan"]
    assert back["b"] == b"\x00\x01"
    assert back["$weird"] == {"$date": "not a date"}
    assert back["list"] == [1, 2.5, None, "x"]


def test_bson_order_and_types() -> None:
    assert compare(MISSING, None) < 0
    assert compare(None, 0) < 0
    assert compare(10**20, "a") < 0
    assert compare("a", {}) < 0
    assert compare({}, []) < 0
    assert compare([], b"") < 0
    assert compare(True, dt.datetime.now(dt.UTC)) < 0
    assert compare(1, 1.0) == 0
    assert compare(float("nan"), -float("inf")) < 0
    assert type_name(2**31) == "long"
    assert type_name(True) == "bool"


def test_state_size_metric_for_windows() -> None:
    (stage,) = compile_pipeline(
        [
            {
                "$setWindowFields": {
                    "partitionBy": "$k",
                    "sortBy": {"t": 1},
                    "output": {"s": {"$sum": "$x", "window": {"documents": [-2, 0]}}},
                }
            }
        ]
    )
    stage([{"k": k, "t": t, "x": 1} for t in range(50) for k in ("a", "b")])
    assert 0 < stage.state_size() <= 2 * 3 + 2
