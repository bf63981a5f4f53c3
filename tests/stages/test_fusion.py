"""``$set`` + ``$project`` run as one fused stage: same results and errors as the two stages apart.

The oracle is the engine itself: each stage compiled on its own list is never
fused, so running them one after the other gives the reference result.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxion_flows.stages import StageRuntimeError, compile_pipeline

Doc = dict[str, Any]

values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["x", "Ab", "ü"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.fixed_dictionaries({"k": st.integers(0, 3)}),
)
documents = st.dictionaries(st.sampled_from(["a", "b", "c", "_id", "s"]), values, max_size=5)
expressions = st.sampled_from(
    [
        "$a",
        "$b.k",
        "$$REMOVE",
        {"$multiply": ["$a", 2]},
        {"$add": ["$a", "$b"]},
        {"$concat": ["$s", "-"]},
        {"$toUpper": "$s"},
        {"$ifNull": ["$c", "none"]},
        {"$cond": [{"$gt": ["$a", 0]}, "$a", "$$REMOVE"]},
        7,
    ]
)
set_specs = st.dictionaries(st.sampled_from(["a", "t", "u", "s"]), expressions, min_size=1, max_size=3)
project_specs = st.lists(
    st.sampled_from(["_id", "a", "b", "t", "u", "s"]), min_size=1, max_size=4, unique=True
)


def run_fused(pipeline: list[Doc], docs: list[Doc]) -> list[Doc]:
    (stage,) = compile_pipeline(pipeline)
    assert stage.name == f"{next(iter(pipeline[0]))}+$project"
    return stage(docs)


def run_apart(pipeline: list[Doc], docs: list[Doc]) -> list[Doc]:
    for spec in pipeline:
        (stage,) = compile_pipeline([spec])
        docs = stage(docs)
    return docs


def outcome(run: Any, pipeline: list[Doc], docs: list[Doc]) -> Any:
    try:
        return [list(doc.items()) for doc in run(pipeline, docs)]  # key order is part of the result
    except StageRuntimeError as error:
        return ("error", str(error))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(documents, max_size=6), set_specs, project_specs, st.booleans())
def test_fused_equals_stages_apart(
    docs: list[Doc], set_spec: Doc, include: list[str], add_fields: bool
) -> None:
    project = {name: 1 for name in include}
    if "_id" not in include and include != ["_id"]:
        project["_id"] = 0
    pipeline = [{"$addFields" if add_fields else "$set": set_spec}, {"$project": project}]
    before = [dict(doc) for doc in docs]
    assert outcome(run_fused, pipeline, docs) == outcome(run_apart, pipeline, docs)
    assert docs == before  # inputs never mutated


class Tracked(dict[str, Any]):
    """A dict subclass: documents that are not exactly dicts take the stages' own path."""


def test_documents_that_are_not_plain_dicts_give_the_same_result() -> None:
    pipeline = [{"$set": {"t": {"$multiply": ["$a", 2]}}}, {"$project": {"_id": 0, "t": 1, "a": 1}}]
    docs: list[Doc] = [Tracked(a=2), {"a": 3}]
    assert run_fused(pipeline, docs) == [{"t": 4, "a": 2}, {"t": 6, "a": 3}]


def test_missing_included_fields_are_left_out() -> None:
    pipeline = [{"$set": {"t": "$nested.x"}}, {"$project": {"_id": 0, "t": 1, "a": 1}}]
    assert run_fused(pipeline, [{"a": 1}, {"nested": {"x": 5}}, {"a": 2, "nested": {"x": 6}}]) == [
        {"a": 1},
        {"t": 5},
        {"a": 2, "t": 6},
    ]


calls: Counter[Any] = Counter()


def count_call(value: Any) -> Any:
    """A ``$function`` body with a visible side effect."""
    calls[value] += 1
    return None if value == "gone" else value


def test_user_functions_run_once_per_document_even_on_the_slow_path() -> None:
    calls.clear()
    pipeline = [
        {"$set": {"f": {"$function": {"body": f"{__name__}:count_call", "args": ["$k"]}}}},
        {"$project": {"_id": 0, "f": 1, "absent": 1}},  # `absent` missing: every document takes the slow path
    ]
    (stage,) = compile_pipeline(pipeline, allow_functions=True)
    assert stage([{"k": "a"}, {"k": "b"}, {"k": "gone"}]) == [{"f": "a"}, {"f": "b"}, {"f": None}]
    assert calls == Counter({"a": 1, "b": 1, "gone": 1})


def test_runtime_errors_name_the_operator_and_the_set_field() -> None:
    pipeline = [{"$set": {"r": {"$divide": ["$a", "$b"]}}}, {"$project": {"_id": 0, "r": 1}}]
    (stage,) = compile_pipeline(pipeline, path=("pipelines", "orders", "stages"))
    assert stage.path == "pipelines.orders.stages[0]"
    with pytest.raises(StageRuntimeError, match=r"\$divide.*stages\[0\]\.\$set\.r"):
        stage([{"a": 1, "b": 0}])


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$set": {"a.b": 1}}, {"$project": {"a": 1}}],  # dotted $set key
        [{"$set": {"a": 1}}, {"$project": {"b": 0}}],  # exclusion
        [{"$set": {"a": 1}}, {"$project": {"x": {"$add": ["$a", 1]}}}],  # computed field
        [{"$set": {"a": 1}}, {"$project": {"n.m": 1}}],  # sub-tree
        [{"$set": {"a": 1}}, {"$match": {"a": 1}}],
    ],
)
def test_other_shapes_stay_separate_stages(pipeline: list[Doc]) -> None:
    assert [stage.name for stage in compile_pipeline(pipeline)] == [next(iter(s)) for s in pipeline]


def test_a_pair_inside_a_longer_pipeline_keeps_the_others_and_their_paths() -> None:
    pipeline = [
        {"$match": {"status": "PAID"}},
        {"$set": {"t": {"$multiply": ["$total", 2]}}},
        {"$project": {"_id": 0, "t": 1}},
        {"$set": {"u": 1}},
    ]
    stages = compile_pipeline(pipeline, path=("stages",))
    assert [(s.name, s.path) for s in stages] == [
        ("$match", "stages[0]"),
        ("$set+$project", "stages[1]"),
        ("$set", "stages[3]"),
    ]
    docs: list[Doc] = [{"status": "PAID", "total": 2}, {"status": "NEW", "total": 3}]
    for stage in stages:
        docs = stage(docs)
    assert docs == [{"t": 4, "u": 1}]
