"""Comparison, boolean, membership and conditional operators.

Comparisons use MongoDB's cross-type order (:func:`values.compare`), so
``{$gt: ["$qty", null]}`` is true for any number and never raises; ``$and``,
``$or`` and ``$cond`` use aggregation truthiness (0, null, missing, false
are false). ``$nin`` is Fluxion's negation of ``$in``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxion_flows.stages.expressions.core import (
    Ctx,
    Fn,
    Node,
    Variables,
    compile_args,
    compile_expr,
    describe,
    named_args,
    operator,
)
from fluxion_flows.stages.values import MISSING, compare, equal, is_truthy

_COMPARISONS: dict[str, Callable[[int], bool]] = {
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
}


def _comparison(name: str, test: Callable[[int], bool]) -> None:
    @operator(name)
    def compile_comparison(spec: Any, ctx: Ctx) -> Node:
        left, right = (n.fn for n in compile_args(spec, ctx, name, 2))
        return Node(lambda doc, v: test(compare(left(doc, v), right(doc, v))))


for _name, _test in _COMPARISONS.items():
    _comparison(_name, _test)


@operator("$eq")
def _eq(spec: Any, ctx: Ctx) -> Node:
    left, right = compile_args(spec, ctx, "$eq", 2)
    if right.is_constant and right.constant.__class__ is str:
        target, get = right.constant, left.fn

        def eq_str(doc: Any, v: Variables) -> bool:
            value = get(doc, v)
            return value.__class__ is str and bool(value == target)

        return Node(eq_str)
    lf, rf = left.fn, right.fn
    return Node(lambda doc, v: equal(lf(doc, v), rf(doc, v)))


@operator("$ne")
def _ne(spec: Any, ctx: Ctx) -> Node:
    left, right = (n.fn for n in compile_args(spec, ctx, "$ne", 2))
    return Node(lambda doc, v: not equal(left(doc, v), right(doc, v)))


@operator("$cmp")
def _cmp(spec: Any, ctx: Ctx) -> Node:
    left, right = (n.fn for n in compile_args(spec, ctx, "$cmp", 2))
    return Node(lambda doc, v: compare(left(doc, v), right(doc, v)))


@operator("$and")
def _and(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$and")]
    return Node(lambda doc, v: all(is_truthy(fn(doc, v)) for fn in fns))


@operator("$or")
def _or(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$or")]
    return Node(lambda doc, v: any(is_truthy(fn(doc, v)) for fn in fns))


@operator("$not")
def _not(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$not", 1))
    return Node(lambda doc, v: not is_truthy(arg(doc, v)))


def _membership(name: str, negate: bool) -> None:
    @operator(name)
    def compile_membership(spec: Any, ctx: Ctx) -> Node:
        needle, haystack = (n.fn for n in compile_args(spec, ctx, name, 2))

        def member(doc: Any, v: Variables) -> bool:
            items = haystack(doc, v)
            if not isinstance(items, list):
                raise ctx.runtime(name, f"requires an array as a second argument, found: {describe(items)}")
            value = needle(doc, v)
            found = any(equal(value, item) for item in items)
            return found != negate

        return Node(member)


_membership("$in", negate=False)
_membership("$nin", negate=True)


@operator("$cond")
def _cond(spec: Any, ctx: Ctx) -> Node:
    if isinstance(spec, list):
        if_node, then_node, else_node = compile_args(spec, ctx, "$cond", 3)
    else:
        args = named_args(spec, ctx, "$cond", ("if", "then", "else"))
        if_node = compile_expr(args["if"], ctx.at("if"))
        then_node = compile_expr(args["then"], ctx.at("then"))
        else_node = compile_expr(args["else"], ctx.at("else"))
    test, yes, no = if_node.fn, then_node.fn, else_node.fn
    return Node(lambda doc, v: yes(doc, v) if is_truthy(test(doc, v)) else no(doc, v))


@operator("$switch")
def _switch(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$switch", ("branches",), ("default",))
    if not isinstance(args["branches"], list) or not args["branches"]:
        raise ctx.at("branches").error("$switch.branches must be a non-empty array of {case, then}")
    branches: list[tuple[Fn, Fn]] = []
    for i, branch in enumerate(args["branches"]):
        bctx = ctx.at("branches", i)
        b = named_args(branch, bctx, "$switch branch", ("case", "then"))
        branches.append(
            (compile_expr(b["case"], bctx.at("case")).fn, compile_expr(b["then"], bctx.at("then")).fn)
        )
    default = compile_expr(args["default"], ctx.at("default")).fn if "default" in args else None

    def switch(doc: Any, v: Variables) -> Any:
        for case, then in branches:
            if is_truthy(case(doc, v)):
                return then(doc, v)
        if default is None:
            raise ctx.runtime(
                "$switch", "could not find a matching branch for an input, and no default was specified"
            )
        return default(doc, v)

    return Node(switch)


@operator("$ifNull")
def _if_null(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$ifNull", (2, 1000))]
    candidates, replacement = fns[:-1], fns[-1]

    def if_null(doc: Any, v: Variables) -> Any:
        for fn in candidates:
            value = fn(doc, v)
            if value is not None and value is not MISSING:
                return value
        return replacement(doc, v)

    return Node(if_null)
