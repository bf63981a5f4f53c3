"""Array operators, including the ones that bind ``$$this``/``$$value``/``as`` variables.

``$filter``, ``$map`` and ``$reduce`` compile their inner expression with the
loop variable in scope, so a typo such as ``$$thsi`` fails at load time.
``$sum $avg $min $max`` as expressions reduce an array argument (or their
argument list), ignoring non-numeric values like the accumulators do.
"""

from __future__ import annotations

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
from fluxion_flows.stages.values import MISSING, compare, equal, is_number, is_truthy, to_array_friendly


def _int_arg(ctx: Ctx, name: str, value: Any, what: str) -> int:
    if not is_number(value) or int(value) != value:
        raise ctx.runtime(name, f"{what} must be an integer, found {describe(value)}")
    return int(value)


def _array_or_null(ctx: Ctx, name: str, value: Any) -> list[Any] | None:
    if value is None or value is MISSING:
        return None
    if not isinstance(value, list):
        raise ctx.runtime(name, f"argument must be an array, found {describe(value)}")
    return value


def _bool_of_array(name: str, test: Any) -> None:
    @operator(name)
    def compile_bool(spec: Any, ctx: Ctx) -> Node:
        (arg,) = (n.fn for n in compile_args(spec, ctx, name, 1))

        def run(doc: Any, v: Variables) -> bool:
            value = arg(doc, v)
            if not isinstance(value, list):
                raise ctx.runtime(name, f"argument must be an array, found {describe(value)}")
            return bool(test(is_truthy(item) for item in value))

        return Node(run)


_bool_of_array("$allElementsTrue", all)
_bool_of_array("$anyElementTrue", any)


@operator("$arrayElemAt")
def _array_elem_at(spec: Any, ctx: Ctx) -> Node:
    array_fn, index_fn = (n.fn for n in compile_args(spec, ctx, "$arrayElemAt", 2))

    def run(doc: Any, v: Variables) -> Any:
        array, index = array_fn(doc, v), index_fn(doc, v)
        if array is None or array is MISSING or index is None or index is MISSING:
            return None
        if not isinstance(array, list):
            raise ctx.runtime("$arrayElemAt", f"first argument must be an array, found {describe(array)}")
        i = _int_arg(ctx, "$arrayElemAt", index, "second argument")
        return array[i] if -len(array) <= i < len(array) else MISSING

    return Node(run)


@operator("$concatArrays")
def _concat_arrays(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$concatArrays")]

    def run(doc: Any, v: Variables) -> Any:
        out: list[Any] = []
        for fn in fns:
            value = fn(doc, v)
            if value is None or value is MISSING:
                return None
            if not isinstance(value, list):
                raise ctx.runtime("$concatArrays", f"only supports arrays, not {describe(value)}")
            out.extend(value)
        return out

    return Node(run)


def _loop_variable(args: dict[str, Any], ctx: Ctx, name: str) -> str:
    var = args.get("as", "this")
    if not isinstance(var, str) or not var or not (var[0].islower() or var[0] == "_"):
        raise ctx.at("as").error(f"{name}.as must be a variable name starting with a lowercase letter")
    return var


@operator("$filter")
def _filter(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$filter", ("input", "cond"), ("as", "limit"))
    var = _loop_variable(args, ctx, "$filter")
    input_fn = compile_expr(args["input"], ctx.at("input")).fn
    cond = compile_expr(args["cond"], ctx.with_variables(var).at("cond")).fn
    limit_fn = compile_expr(args["limit"], ctx.at("limit")).fn if "limit" in args else None

    def run(doc: Any, v: Variables) -> Any:
        items = _array_or_null(ctx, "$filter", input_fn(doc, v))
        if items is None:
            return None
        limit = None
        if limit_fn is not None:
            raw = limit_fn(doc, v)
            if raw is not None and raw is not MISSING:
                limit = _int_arg(ctx, "$filter", raw, "limit")
                if limit < 1:
                    raise ctx.runtime("$filter", "limit must be greater than 0")
        inner = dict(v)
        out = []
        for item in items:
            inner[var] = item
            if is_truthy(cond(doc, inner)):
                out.append(item)
                if limit is not None and len(out) >= limit:
                    break
        return out

    return Node(run)


@operator("$map")
def _map(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$map", ("input", "in"), ("as",))
    var = _loop_variable(args, ctx, "$map")
    input_fn = compile_expr(args["input"], ctx.at("input")).fn
    body = compile_expr(args["in"], ctx.with_variables(var).at("in")).fn

    def run(doc: Any, v: Variables) -> Any:
        items = _array_or_null(ctx, "$map", input_fn(doc, v))
        if items is None:
            return None
        inner = dict(v)
        out = []
        for item in items:
            inner[var] = item
            out.append(to_array_friendly(body(doc, inner)))
        return out

    return Node(run)


@operator("$reduce")
def _reduce(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$reduce", ("input", "initialValue", "in"))
    input_fn = compile_expr(args["input"], ctx.at("input")).fn
    initial = compile_expr(args["initialValue"], ctx.at("initialValue")).fn
    body = compile_expr(args["in"], ctx.with_variables("this", "value").at("in")).fn

    def run(doc: Any, v: Variables) -> Any:
        items = _array_or_null(ctx, "$reduce", input_fn(doc, v))
        if items is None:
            return None
        inner = dict(v)
        acc = initial(doc, v)
        for item in items:
            inner["this"] = item
            inner["value"] = acc
            acc = body(doc, inner)
        return acc

    return Node(run)


def _first_last(name: str, pick: int) -> None:
    @operator(name)
    def compile_pick(spec: Any, ctx: Ctx) -> Node:
        (arg,) = (n.fn for n in compile_args(spec, ctx, name, 1))

        def run(doc: Any, v: Variables) -> Any:
            items = _array_or_null(ctx, name, arg(doc, v))
            if items is None:
                return None
            return items[pick] if items else MISSING

        return Node(run)


_first_last("$first", 0)
_first_last("$last", -1)


@operator("$indexOfArray")
def _index_of_array(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$indexOfArray", (2, 4))]

    def run(doc: Any, v: Variables) -> Any:
        values = [fn(doc, v) for fn in fns]
        items = _array_or_null(ctx, "$indexOfArray", values[0])
        if items is None:
            return None
        start = _int_arg(ctx, "$indexOfArray", values[2], "start") if len(values) > 2 else 0
        end = _int_arg(ctx, "$indexOfArray", values[3], "end") if len(values) > 3 else len(items)
        if start < 0 or end < 0:
            raise ctx.runtime("$indexOfArray", "start and end must be non-negative")
        for i in range(start, min(end, len(items))):
            if equal(items[i], values[1]):
                return i
        return -1

    return Node(run)


@operator("$isArray")
def _is_array(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$isArray", 1))
    return Node(lambda doc, v: isinstance(arg(doc, v), list))


@operator("$reverseArray")
def _reverse_array(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$reverseArray", 1))

    def run(doc: Any, v: Variables) -> Any:
        items = _array_or_null(ctx, "$reverseArray", arg(doc, v))
        return None if items is None else items[::-1]

    return Node(run)


@operator("$size")
def _size(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$size", 1))

    def run(doc: Any, v: Variables) -> int:
        value = arg(doc, v)
        if not isinstance(value, list):
            raise ctx.runtime("$size", f"the argument must be an array, found {describe(value)}")
        return len(value)

    return Node(run)


@operator("$slice")
def _slice(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$slice", (2, 3))]

    def run(doc: Any, v: Variables) -> Any:
        values = [fn(doc, v) for fn in fns]
        if any(x is None or x is MISSING for x in values):
            return None
        items = _array_or_null(ctx, "$slice", values[0]) or []
        if len(values) == 2:
            n = _int_arg(ctx, "$slice", values[1], "n")
            return items[:n] if n >= 0 else items[max(len(items) + n, 0) :]
        position = _int_arg(ctx, "$slice", values[1], "position")
        n = _int_arg(ctx, "$slice", values[2], "n")
        if n <= 0:
            raise ctx.runtime("$slice", f"third argument must be positive, found {n}")
        start = position if position >= 0 else max(len(items) + position, 0)
        return items[start : start + n]

    return Node(run)


@operator("$zip")
def _zip(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$zip", ("inputs",), ("useLongestLength", "defaults"))
    inputs_fn = compile_expr(args["inputs"], ctx.at("inputs")).fn
    longest = bool(args.get("useLongestLength", False))
    if "defaults" in args and not longest:
        raise ctx.at("defaults").error("$zip.defaults requires useLongestLength: true")
    defaults_fn = compile_expr(args["defaults"], ctx.at("defaults")).fn if "defaults" in args else None

    def run(doc: Any, v: Variables) -> Any:
        arrays = inputs_fn(doc, v)
        if not isinstance(arrays, list):
            raise ctx.runtime("$zip", f"inputs must be an array of arrays, found {describe(arrays)}")
        if any(a is None or a is MISSING for a in arrays):
            return None
        for a in arrays:
            if not isinstance(a, list):
                raise ctx.runtime("$zip", f"inputs must be arrays, found {describe(a)}")
        defaults = defaults_fn(doc, v) if defaults_fn else [None] * len(arrays)
        if not isinstance(defaults, list) or len(defaults) != len(arrays):
            raise ctx.runtime("$zip", "defaults must be an array as long as inputs")
        if not arrays:
            return []
        length = max(map(len, arrays)) if longest else min(map(len, arrays))
        return [[a[i] if i < len(a) else defaults[j] for j, a in enumerate(arrays)] for i in range(length)]

    return Node(run)


def _numbers(values: list[Any]) -> list[Any]:
    return [x for x in values if is_number(x)]


def _reducer(name: str) -> None:
    @operator(name)
    def compile_reducer(spec: Any, ctx: Ctx) -> Node:
        fns: list[Fn] = [n.fn for n in compile_args(spec, ctx, name)]
        single = len(fns) == 1

        def run(doc: Any, v: Variables) -> Any:
            if single:
                value = fns[0](doc, v)
                values = value if isinstance(value, list) else [value]
            else:
                values = [fn(doc, v) for fn in fns]
            return reduce_values(name, values)

        return Node(run)


def reduce_values(name: str, values: list[Any]) -> Any:
    """$sum / $avg / $min / $max over a list of values (shared with the array reducers)."""
    if name == "$sum":
        total: Any = 0
        for x in _numbers(values):
            total = total + x
        return total
    if name == "$avg":
        numbers = _numbers(values)
        return sum(numbers) / len(numbers) if numbers else None
    present = [x for x in values if x is not None and x is not MISSING]
    if not present:
        return None
    best = present[0]
    for x in present[1:]:
        c = compare(x, best)
        if (c < 0) if name == "$min" else (c > 0):
            best = x
    return best


for _name in ("$sum", "$avg", "$min", "$max"):
    _reducer(_name)


@operator("$range")
def _range(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$range", (2, 3))]

    def run(doc: Any, v: Variables) -> Any:
        values = [_int_arg(ctx, "$range", fn(doc, v), "argument") for fn in fns]
        step = values[2] if len(values) == 3 else 1
        if step == 0:
            raise ctx.runtime("$range", "step cannot be 0")
        return list(range(values[0], values[1], step))

    return Node(run)
