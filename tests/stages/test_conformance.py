"""Data-driven conformance suite: input documents, a pipeline, the output MongoDB documents.

Expected outputs are written from MongoDB's documented semantics (the server
manual's operator pages), not from this implementation. Case files:

* ``expressions_*.yaml``: ``[expression, document, expected]`` rows, run as
  ``$project: {_id: 0, r: <expression>}``; ``expected`` may be ``{missing: true}``
  (field absent), ``{error: "text"}`` (runtime error) or ``{loadError: "text"}``.
* ``query.yaml``: groups of documents and ``[query, [matching _ids]]`` rows for ``$match``.
* ``stages_*.yaml``: full cases ``{name, input, pipeline, expected | error | runtimeError, batches?}``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from fluxion_flows.errors import StageError
from fluxion_flows.stages import StageRuntimeError, compile_pipeline
from tests.stages.conftest import CASES, ejson, load


def _same(actual: Any, expected: Any) -> bool:
    """Deep equality where 1 == 1.0 is not enough: types must match too (int vs double matters)."""
    if isinstance(expected, float) and isinstance(actual, float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12) or (
            math.isnan(actual) and math.isnan(expected)
        )
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, dict):
        return (list(actual) == list(expected) and all(_same(actual[k], expected[k]) for k in expected)) or (
            set(actual) == set(expected) and all(_same(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(
            _same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    return bool(actual == expected)


def run(pipeline: list[Any], batches: list[list[Any]]) -> list[Any]:
    stages = compile_pipeline(
        pipeline, file="case.yaml", path=("stages",), allow_functions=True, globals={"rate": 2}
    )
    out: list[Any] = []
    for batch in batches:
        docs = batch
        for stage in stages:
            docs = stage(docs)
        out.extend(docs)
    for stage in stages:
        flush = getattr(stage, "flush", None)
        if flush is not None:
            out.extend(flush())
    return out


def _expression_cases() -> list[Any]:
    cases = []
    for path in sorted(CASES.glob("expressions_*.yaml")):
        for i, row in enumerate(load(path.name)):
            expr, doc, expected = row
            cases.append(
                pytest.param(ejson(expr), ejson(doc), expected, id=f"{path.stem}-{i}-{_label(expr)}")
            )
    return cases


def _label(expr: Any) -> str:
    return next(iter(expr)) if isinstance(expr, dict) and expr else str(expr)[:20]


@pytest.mark.parametrize(("expr", "doc", "expected"), _expression_cases())
def test_expression(expr: Any, doc: Any, expected: Any) -> None:
    pipeline = [{"$project": {"_id": 0, "r": expr}}]
    if isinstance(expected, dict) and "loadError" in expected:
        with pytest.raises(StageError, match=expected["loadError"]):
            compile_pipeline(pipeline, allow_functions=True)
        return
    if isinstance(expected, dict) and "error" in expected:
        with pytest.raises(StageRuntimeError, match=expected["error"]):
            run(pipeline, [[doc]])
        return
    (result,) = run(pipeline, [[doc]])
    if isinstance(expected, dict) and expected.get("missing") is True:
        assert "r" not in result
    else:
        assert "r" in result
        assert _same(result["r"], ejson(expected)), f"{result['r']!r} != {ejson(expected)!r}"


def _query_cases() -> list[Any]:
    cases = []
    for g, group in enumerate(load("query.yaml")):
        docs = ejson(group["docs"])
        for i, (query, ids) in enumerate(group["cases"]):
            cases.append(pytest.param(docs, ejson(query), ids, id=f"query-{g}-{i}-{_label(query)}"))
    return cases


@pytest.mark.parametrize(("docs", "query", "ids"), _query_cases())
def test_query(docs: list[Any], query: Any, ids: list[Any]) -> None:
    out = run([{"$match": query}], [docs])
    assert [d["_id"] for d in out] == ids


def _stage_cases() -> list[Any]:
    cases = []
    for path in sorted(CASES.glob("stages_*.yaml")):
        for case in load(path.name):
            cases.append(pytest.param(case, id=f"{path.stem}-{case['name']}"))
    return cases


@pytest.mark.parametrize("case", _stage_cases())
def test_stage(case: dict[str, Any]) -> None:
    pipeline = ejson(case["pipeline"])
    if "error" in case:
        with pytest.raises(StageError, match=case["error"]):
            compile_pipeline(pipeline, file="case.yaml", path=("stages",))
        return
    batches = ejson(case["batches"]) if "batches" in case else [ejson(case.get("input", []))]
    if "runtimeError" in case:
        with pytest.raises(StageRuntimeError, match=case["runtimeError"]):
            run(pipeline, batches)
        return
    out = run(pipeline, batches)
    expected = ejson(case["expected"])
    if case.get("unordered"):
        key = repr
        out, expected = sorted(out, key=key), sorted(expected, key=key)
    assert _same(out, expected), f"\n got: {out!r}\nwant: {expected!r}"


def test_case_files_exist() -> None:
    assert len(list(Path(CASES).glob("*.yaml"))) >= 3
