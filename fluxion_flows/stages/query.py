"""The ``$match`` query language, compiled into predicates ``doc -> bool``.

Query semantics differ from expression semantics on purpose (MongoDB does):
comparisons only match values of the same type class ("type bracketing", so
``{qty: {$gt: null}}`` matches nothing), ``{a: null}`` matches a missing
``a``, and an array field matches when the array itself or any element does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fluxion_flows.stages.codegen import Gen
from fluxion_flows.stages.expressions.core import Ctx, compile_expr, unknown_operator
from fluxion_flows.stages.paths import query_values, split_path
from fluxion_flows.stages.values import (
    MISSING,
    TYPE_CODES,
    compare,
    equal,
    is_number,
    is_truthy,
    type_name,
    type_rank,
)

Predicate = Callable[[Any], bool]
ValueTest = Callable[[Any], bool]

_LOGICAL = ("$and", "$or", "$nor")
_TOP_LEVEL = (*_LOGICAL, "$expr", "$comment")
_FIELD_OPERATORS = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type",
    "$regex", "$options", "$not", "$all", "$elemMatch", "$size", "$mod",
)  # fmt: skip


def compile_query(spec: Any, ctx: Ctx) -> Predicate:
    """Compile a whole query document (the argument of ``$match``)."""
    if not isinstance(spec, dict):
        raise ctx.error('$match takes a query object, e.g. {status: "PAID"}')
    predicates = [_clause(key, value, ctx.at(key)) for key, value in spec.items()]
    if len(predicates) == 1:
        return predicates[0]
    return lambda doc: all(p(doc) for p in predicates)


def _clause(key: str, value: Any, ctx: Ctx) -> Predicate:
    if key.startswith("$"):
        if key in _LOGICAL:
            return _logical(key, value, ctx)
        if key == "$expr":
            expr = compile_expr(value, ctx).fn
            variables: dict[str, Any] = {}
            return lambda doc: is_truthy(expr(doc, variables))
        if key == "$comment":
            return lambda doc: True
        raise _unknown(key, ctx, _TOP_LEVEL)
    return _field(split_path(key), value, ctx)


def _unknown(name: str, ctx: Ctx, valid: tuple[str, ...]) -> Exception:
    return unknown_operator(name, ctx, "query operator", candidates=valid)


def _logical(key: str, value: Any, ctx: Ctx) -> Predicate:
    if not isinstance(value, list) or not value:
        raise ctx.error(f"{key} takes a non-empty array of query objects")
    parts = [compile_query(item, ctx.at(i)) for i, item in enumerate(value)]
    if key == "$and":
        return lambda doc: all(p(doc) for p in parts)
    if key == "$or":
        return lambda doc: any(p(doc) for p in parts)
    return lambda doc: not any(p(doc) for p in parts)


def _is_operator_object(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and k.startswith("$") for k in value)
    )


def _field(parts: tuple[str, ...], value: Any, ctx: Ctx) -> Predicate:
    if _is_operator_object(value):
        test = _operators(value, ctx)
    else:
        test = _eq_test(value)
        if len(parts) == 1:
            simple = _simple_top_level(parts[0], value)
            if simple is not None:
                return simple
    return lambda doc: test(query_values(doc, parts))


def _simple_top_level(key: str, value: Any) -> Predicate | None:
    """Fast path for ``{field: "string"}`` / ``{field: number}``: one lookup, no lists."""
    if value.__class__ is str:

        def match_str(doc: Any) -> bool:
            found = doc.get(key, MISSING)
            if found.__class__ is str:
                return bool(found == value)
            return found.__class__ is list and any(item.__class__ is str and item == value for item in found)

        return match_str
    return None


ValuesTest = Callable[[list[Any]], bool]


def _each(test: ValueTest, *, arrays_whole: bool = True) -> ValuesTest:
    """Match when any candidate value, or any element of an array candidate, passes."""

    def run(values: list[Any]) -> bool:
        for value in values:
            if value.__class__ is list:
                if arrays_whole and test(value):
                    return True
                if any(test(item) for item in value):
                    return True
            elif test(value):
                return True
        return False

    return run


def _eq_value(target: Any) -> ValueTest:
    if target is None:
        return lambda value: value is None or value is MISSING
    if isinstance(target, re.Pattern):
        return lambda value: isinstance(value, str) and target.search(value) is not None
    return lambda value: value is not MISSING and equal(value, target)


def _eq_test(target: Any) -> ValuesTest:
    return _each(_eq_value(target))


def _bracketed(target: Any, accept: Callable[[int], bool]) -> ValueTest:
    """Comparison within the target's type class only (MongoDB type bracketing)."""
    rank = type_rank(target)
    if target is None:
        return lambda value: (value is None or value is MISSING) and accept(0)

    def test(value: Any) -> bool:
        return value is not MISSING and type_rank(value) == rank and accept(compare(value, target))

    return test


def _operators(spec: dict[str, Any], ctx: Ctx) -> ValuesTest:
    tests: list[ValuesTest] = []
    for name, arg in spec.items():
        if name == "$options":
            if "$regex" not in spec:
                raise ctx.at(name).error("$options needs $regex")
            continue
        tests.append(_operator(name, arg, spec, ctx.at(name)))
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(t(values) for t in tests)


def _operator(name: str, arg: Any, spec: dict[str, Any], ctx: Ctx) -> ValuesTest:
    if name == "$eq":
        return _eq_test(arg)
    if name == "$ne":
        eq = _eq_test(arg)
        return lambda values: not eq(values)
    if name in ("$gt", "$gte", "$lt", "$lte"):
        accept = {
            "$gt": lambda c: c > 0,
            "$gte": lambda c: c >= 0,
            "$lt": lambda c: c < 0,
            "$lte": lambda c: c <= 0,
        }
        return _each(_bracketed(arg, accept[name]))
    if name in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise ctx.error(f"{name} needs an array")
        member = [_eq_value(item) for item in arg]
        test_in = _each(lambda value: any(m(value) for m in member))
        if name == "$in":
            return test_in
        return lambda values: not test_in(values)
    if name == "$exists":
        want = is_truthy(arg)
        return lambda values: any(v is not MISSING for v in values) == want
    if name == "$type":
        return _type_test(arg, ctx)
    if name == "$regex":
        return _each(_regex_value(arg, spec.get("$options", ""), ctx), arrays_whole=False)
    if name == "$not":
        return _not(arg, ctx)
    if name == "$all":
        return _all(arg, ctx)
    if name == "$elemMatch":
        return _elem_match(arg, ctx)
    if name == "$size":
        if not isinstance(arg, int) or isinstance(arg, bool) or arg < 0:
            raise ctx.error("$size needs a non-negative integer")
        return lambda values: any(v.__class__ is list and len(v) == arg for v in values)
    if name == "$mod":
        return _mod(arg, ctx)
    raise _unknown(name, ctx, _FIELD_OPERATORS)


def _type_test(arg: Any, ctx: Ctx) -> ValuesTest:
    wanted: set[str] = set()
    for item in arg if isinstance(arg, list) else [arg]:
        if item == "number":
            wanted |= {"int", "long", "double", "decimal"}
        elif isinstance(item, str) and item in TYPE_CODES:
            wanted.add(item)
        elif is_number(item) and item in TYPE_CODES.values():
            wanted.add(next(k for k, code in TYPE_CODES.items() if code == item))
        else:
            raise ctx.error(f"unknown $type `{item}`", found=str(item), valid=[*TYPE_CODES, "number"])
    array_wanted = "array" in wanted

    def run(values: list[Any]) -> bool:
        for value in values:
            if value is MISSING:
                continue
            if value.__class__ is list:
                if array_wanted or any(type_name(item) in wanted for item in value):
                    return True
            elif type_name(value) in wanted:
                return True
        return False

    return run


def _regex_value(pattern: Any, options: Any, ctx: Ctx) -> ValueTest:
    flags = 0
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        if not isinstance(pattern, str) or not isinstance(options, str):
            raise ctx.error("$regex needs a string pattern and string $options")
        for letter in options:
            if letter not in "imsx":
                raise ctx.error(f"invalid regex option `{letter}`", valid=["i", "m", "s", "x"])
            flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
        try:
            compiled = re.compile(pattern, flags)
        except re.error as exc:
            raise ctx.error(f"invalid regular expression: {exc}") from None
    return lambda value: value.__class__ is str and compiled.search(value) is not None


def _not(arg: Any, ctx: Ctx) -> ValuesTest:
    if isinstance(arg, re.Pattern):
        inner = _each(_regex_value(arg, "", ctx), arrays_whole=False)
    elif _is_operator_object(arg):
        inner = _operators(arg, ctx)
    else:
        raise ctx.error("$not needs an operator object or a regex, e.g. {$not: {$gt: 5}}")
    return lambda values: not inner(values)


def _all(arg: Any, ctx: Ctx) -> ValuesTest:
    if not isinstance(arg, list):
        raise ctx.error("$all needs an array")
    if not arg:
        return lambda values: False
    tests = [
        _elem_match(item["$elemMatch"], ctx)
        if isinstance(item, dict) and "$elemMatch" in item
        else _eq_test(item)
        for item in arg
    ]
    return lambda values: all(t(values) for t in tests)


def _elem_match(arg: Any, ctx: Ctx) -> ValuesTest:
    if not isinstance(arg, dict):
        raise ctx.error("$elemMatch needs a query object")
    if _is_operator_object(arg) and not any(k in _LOGICAL or k == "$expr" for k in arg):
        scalar = _operators(arg, ctx)
        element_test: ValueTest = lambda item: scalar([item])  # noqa: E731
    else:
        query = compile_query(arg, ctx)
        element_test = lambda item: isinstance(item, dict) and query(item)  # noqa: E731
    return lambda values: any(v.__class__ is list and any(element_test(i) for i in v) for v in values)


def _mod(arg: Any, ctx: Ctx) -> ValuesTest:
    if not isinstance(arg, list) or len(arg) != 2 or not all(is_number(x) for x in arg):
        raise ctx.error("$mod needs [divisor, remainder]")
    divisor, remainder = int(arg[0]), int(arg[1])
    if divisor == 0:
        raise ctx.error("$mod divisor cannot be 0")

    def test(value: Any) -> bool:
        if not is_number(value) or value != value:
            return False
        quotient = int(value)
        return int(quotient - divisor * int(quotient / divisor)) == remainder

    return _each(test, arrays_whole=False)


_INLINE_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_PYTHON_OPERATOR = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def query_code(spec: dict[str, Any], ctx: Ctx, g: Gen) -> str:
    """Python source of a boolean expression on document ``d``, for a generated ``$match``.

    Each top-level clause becomes one inline test when it compares a plain path
    (one or two parts) with a string or number; otherwise, and whenever the
    value found is not of that type (arrays, null, missing, mixed types), the
    clause's compiled predicate decides, so results are those of the closures.
    """
    return " and ".join(f"({_clause_code(key, value, ctx.at(key), g)})" for key, value in spec.items())


def _clause_code(key: str, value: Any, ctx: Ctx, g: Gen) -> str:
    predicate = f"{g.bind(_clause(key, value, ctx))}(d)"
    if key.startswith("$"):
        return predicate
    parts = split_path(key)
    if _is_operator_object(value):
        if len(value) != 1:
            return predicate
        operator, target = next(iter(value.items()))
    else:
        operator, target = "$eq", value
    if operator not in _INLINE_OPERATORS or len(parts) > 2 or any(not p or p.isdigit() for p in parts):
        return predicate
    found = g.temp()
    pre = ""
    source = f"d.get({g.bind(parts[0])}, {g.missing})"
    if len(parts) == 2:
        outer = g.temp()
        pre = f"({outer} := {source}).__class__ is {g.bind(dict)} and "
        source = f"{outer}.get({g.bind(parts[1])}, {g.missing})"
    read = f"({found} := {source})"
    if target.__class__ is str:
        check = f"{pre}{read}.__class__ is {g.bind(str)}"
    elif (target.__class__ is int or target.__class__ is float) and target == target:
        is_float = f"{found}.__class__ is {g.bind(float)}"
        if operator not in ("$eq", "$ne"):  # NaN sorts below all numbers: leave it to compare()
            is_float = f"({is_float} and {found} == {found})"
        check = f"{pre}({read}.__class__ is {g.bind(int)} or {is_float})"
    else:
        return predicate
    return f"{found} {_PYTHON_OPERATOR[operator]} {g.bind(target)} if {check} else {predicate}"
