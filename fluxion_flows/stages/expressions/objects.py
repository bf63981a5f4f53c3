"""Object operators: ``$getField $setField $unsetField $mergeObjects $objectToArray
$arrayToObject``.

``$getField``/``$setField``/``$unsetField`` address one field by its literal
name (dots and ``$`` included, no path traversal). Fluxion allows the name to
be computed by an expression; MongoDB requires a constant.
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
from fluxion_flows.stages.values import MISSING, is_nullish


def _field_name(ctx: Ctx, name: str, fn: Fn, doc: Any, v: Variables) -> str:
    value = fn(doc, v)
    if not isinstance(value, str):
        raise ctx.runtime(name, f"'field' must evaluate to a string, found {describe(value)}")
    return value


def _field_arg(spec: Any, ctx: Ctx) -> Fn:
    """The field name: a constant, or (Fluxion) any expression; use $literal for names starting with `$`."""
    return compile_expr(spec, ctx).fn


@operator("$getField")
def _get_field(spec: Any, ctx: Ctx) -> Node:
    if not isinstance(spec, dict) or "field" not in spec:
        spec = {"field": spec}
    args = named_args(spec, ctx, "$getField", ("field",), ("input",))
    field_fn = _field_arg(args["field"], ctx.at("field"))
    input_fn = compile_expr(args["input"], ctx.at("input")).fn if "input" in args else None

    def run(doc: Any, v: Variables) -> Any:
        source = input_fn(doc, v) if input_fn else doc
        name = _field_name(ctx, "$getField", field_fn, doc, v)
        if is_nullish(source):
            return None
        if not isinstance(source, dict):
            raise ctx.runtime("$getField", f"'input' must evaluate to an object, found {describe(source)}")
        return source.get(name, MISSING)

    return Node(run)


@operator("$setField")
def _set_field(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$setField", ("field", "input", "value"))
    field_fn = _field_arg(args["field"], ctx.at("field"))
    input_fn = compile_expr(args["input"], ctx.at("input")).fn
    value_fn = compile_expr(args["value"], ctx.at("value")).fn
    return Node(_setter(ctx, "$setField", field_fn, input_fn, value_fn))


@operator("$unsetField")
def _unset_field(spec: Any, ctx: Ctx) -> Node:
    args = named_args(spec, ctx, "$unsetField", ("field", "input"))
    field_fn = _field_arg(args["field"], ctx.at("field"))
    input_fn = compile_expr(args["input"], ctx.at("input")).fn
    return Node(_setter(ctx, "$unsetField", field_fn, input_fn, lambda _d, _v: MISSING))


def _setter(ctx: Ctx, name: str, field_fn: Fn, input_fn: Fn, value_fn: Fn) -> Fn:
    def run(doc: Any, v: Variables) -> Any:
        source = input_fn(doc, v)
        key = _field_name(ctx, name, field_fn, doc, v)
        if is_nullish(source):
            return None
        if not isinstance(source, dict):
            raise ctx.runtime(name, f"requires 'input' to evaluate to an object, found {describe(source)}")
        out = dict(source)
        value = value_fn(doc, v)
        if value is MISSING:
            out.pop(key, None)
        else:
            out[key] = value
        return out

    return run


def merge_objects(ctx: Ctx, name: str, values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        if is_nullish(value):
            continue
        if not isinstance(value, dict):
            raise ctx.runtime(
                name, f"requires object inputs, but input {value!r} is of type {describe(value)}"
            )
        out.update(value)
    return out


@operator("$mergeObjects")
def _merge_objects(spec: Any, ctx: Ctx) -> Node:
    fns = [n.fn for n in compile_args(spec, ctx, "$mergeObjects")]
    single = len(fns) == 1

    def run(doc: Any, v: Variables) -> Any:
        if single:
            value = fns[0](doc, v)
            values = value if isinstance(value, list) else [value]
        else:
            values = [fn(doc, v) for fn in fns]
        return merge_objects(ctx, "$mergeObjects", values)

    return Node(run)


@operator("$objectToArray")
def _object_to_array(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$objectToArray", 1))

    def run(doc: Any, v: Variables) -> Any:
        value = arg(doc, v)
        if is_nullish(value):
            return None
        if not isinstance(value, dict):
            raise ctx.runtime("$objectToArray", f"requires a document input, found: {describe(value)}")
        return [{"k": k, "v": item} for k, item in value.items()]

    return Node(run)


@operator("$arrayToObject")
def _array_to_object(spec: Any, ctx: Ctx) -> Node:
    (arg,) = (n.fn for n in compile_args(spec, ctx, "$arrayToObject", 1))

    def pair(item: Any) -> tuple[str, Any]:
        if isinstance(item, list) and len(item) == 2:
            key, value = item
        elif isinstance(item, dict) and set(item) == {"k", "v"}:
            key, value = item["k"], item["v"]
        else:
            raise ctx.runtime("$arrayToObject", "requires an array of [key, value] pairs or {k, v} documents")
        if not isinstance(key, str):
            raise ctx.runtime("$arrayToObject", f"requires string keys, found {describe(key)}")
        if "\0" in key:
            raise ctx.runtime("$arrayToObject", "keys must not contain an embedded null byte")
        return key, value

    def run(doc: Any, v: Variables) -> Any:
        value = arg(doc, v)
        if is_nullish(value):
            return None
        if not isinstance(value, list):
            raise ctx.runtime("$arrayToObject", f"requires an array input, found: {describe(value)}")
        return dict(pair(item) for item in value)

    return Node(run)
