"""Per-micro-batch stages: ``$limit $skip $sort $sortByCount $count $bucket $bucketAuto
$densify $fill``.

In a stream these see one micro-batch at a time (documented in README.md):
``$sort`` orders each batch, ``$limit: 10`` keeps the first ten of each
batch, ``$count`` counts each batch. They keep no state across batches.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.accumulators import Accumulator
from fluxion_flows.stages.expressions.core import Ctx, Fn, Variables, compile_expr, named_args
from fluxion_flows.stages.expressions.dates import UNITS, date_add
from fluxion_flows.stages.group import GroupSpec
from fluxion_flows.stages.paths import get_path, query_values, set_path, split_path
from fluxion_flows.stages.runtime import BatchFn
from fluxion_flows.stages.values import MISSING, UTC, compare, hashable, is_nullish, is_number, sort_key


def _count_arg(spec: Any, ctx: Ctx, name: str, positive: bool) -> int:
    if not isinstance(spec, int) or isinstance(spec, bool) or spec < (1 if positive else 0):
        raise ctx.error(f"{name} takes a {'positive' if positive else 'non-negative'} integer, got {spec!r}")
    return spec


def limit(spec: Any, ctx: Ctx) -> BatchFn:
    n = _count_arg(spec, ctx, "$limit", positive=True)
    return lambda docs, _v: docs[:n]


def skip(spec: Any, ctx: Ctx) -> BatchFn:
    n = _count_arg(spec, ctx, "$skip", positive=False)
    return lambda docs, _v: docs[n:]


def _sort_value(doc: Any, parts: tuple[str, ...], descending: bool) -> Any:
    """MongoDB sorts an array field by its smallest (ascending) or largest (descending) element."""
    candidates: list[Any] = []
    for value in query_values(doc, parts):
        if isinstance(value, list):
            candidates.extend(value if value else [MISSING])
        else:
            candidates.append(value)
    values = [None if v is MISSING else v for v in candidates] or [None]
    best = values[0]
    for value in values[1:]:
        c = compare(value, best)
        if (c > 0) if descending else (c < 0):
            best = value
    return best


def sort_keys(spec: Any, ctx: Ctx) -> list[tuple[tuple[str, ...], bool]]:
    if not isinstance(spec, dict) or not spec:
        raise ctx.error("$sort takes a non-empty object of field: 1 | -1")
    keys = []
    for field, direction in spec.items():
        if direction not in (1, -1) or isinstance(direction, bool):
            raise ctx.at(field).error(f"$sort direction for `{field}` must be 1 or -1, got {direction!r}")
        keys.append((split_path(field), direction == -1))
    return keys


def sort_documents(docs: list[Document], keys: list[tuple[tuple[str, ...], bool]]) -> list[Document]:
    """Stable multi-key sort in MongoDB order."""
    result = list(docs)
    for parts, descending in reversed(keys):
        result.sort(key=_sort_key_fn(parts, descending), reverse=descending)
    return result


def _sort_key_fn(parts: tuple[str, ...], descending: bool) -> Callable[[Document], Any]:
    return lambda doc: sort_key(_sort_value(doc, parts, descending))


def sort(spec: Any, ctx: Ctx) -> BatchFn:
    keys = sort_keys(spec, ctx)
    return lambda docs, _v: sort_documents(docs, keys)


def count(spec: Any, ctx: Ctx) -> BatchFn:
    if not isinstance(spec, str) or not spec or spec.startswith("$") or "." in spec:
        raise ctx.error("$count takes an output field name (not starting with `$`, no `.`)")
    return lambda docs, _v: [{spec: len(docs)}] if docs else []


def _grouped(spec_fn: Fn, docs: list[Document], v: Variables) -> dict[Any, tuple[Any, list[Document]]]:
    groups: dict[Any, tuple[Any, list[Document]]] = {}
    for doc in docs:
        value = spec_fn(doc, v)
        value = None if value is MISSING else value
        groups.setdefault(hashable(value), (value, []))[1].append(doc)
    return groups


def sort_by_count(spec: Any, ctx: Ctx) -> BatchFn:
    if isinstance(spec, dict) and not (len(spec) == 1 and next(iter(spec)).startswith("$")):
        raise ctx.error("$sortByCount takes a field path or an operator expression")
    fn = compile_expr(spec, ctx).fn

    def run(docs: list[Document], v: Variables) -> list[Document]:
        counted = [{"_id": key, "count": len(items)} for key, items in _grouped(fn, docs, v).values()]
        counted.sort(key=lambda d: d["count"], reverse=True)
        return counted

    return run


def _accumulate(output: GroupSpec, docs: list[Document], v: Variables) -> dict[str, Any]:
    accumulators: list[Accumulator] = [cls() for _, cls, _ in output.fields]
    for doc in docs:
        for accumulator, (_, _, fn) in zip(accumulators, output.fields, strict=True):
            accumulator.add(fn(doc, v))
    return {name: acc.result() for acc, (name, _, _) in zip(accumulators, output.fields, strict=True)}


def _output_spec(args: dict[str, Any], ctx: Ctx) -> GroupSpec:
    output = args.get("output", {"count": {"$sum": 1}})
    if not isinstance(output, dict):
        raise ctx.at("output").error("output must be an object of field: {accumulator}")
    return GroupSpec({"_id": None, **output}, ctx.at("output"), None)


def bucket(spec: Any, ctx: Ctx) -> BatchFn:
    args = named_args(spec, ctx, "$bucket", ("groupBy", "boundaries"), ("default", "output"))
    group_by = compile_expr(args["groupBy"], ctx.at("groupBy")).fn
    boundaries = args["boundaries"]
    if not isinstance(boundaries, list) or len(boundaries) < 2:
        raise ctx.at("boundaries").error("$bucket.boundaries must be an array of at least two values")
    for low, high in itertools.pairwise(boundaries):
        if compare(low, high) >= 0:
            raise ctx.at("boundaries").error("$bucket.boundaries must be sorted ascending with no duplicates")
    has_default = "default" in args
    default = args.get("default")
    if has_default and compare(boundaries[0], default) <= 0 and compare(default, boundaries[-1]) < 0:
        raise ctx.at("default").error(
            "$bucket.default must be less than the lowest or >= the highest boundary"
        )
    output = _output_spec(args, ctx)

    def bucket_of(value: Any) -> int:
        if compare(value, boundaries[0]) >= 0 and compare(value, boundaries[-1]) < 0:
            for i in range(len(boundaries) - 1):
                if compare(value, boundaries[i + 1]) < 0:
                    return i
        return -1

    def run(docs: list[Document], v: Variables) -> list[Document]:
        members: dict[int, list[Document]] = {}
        for doc in docs:
            value = group_by(doc, v)
            index = bucket_of(None if value is MISSING else value)
            if index < 0 and not has_default:
                raise ctx.runtime(
                    "$bucket", f"value {value!r} falls outside the boundaries and no default was given"
                )
            members.setdefault(index, []).append(doc)
        out = []
        for index in sorted(i for i in members if i >= 0):
            out.append({"_id": boundaries[index], **_accumulate(output, members[index], v)})
        if -1 in members:
            out.append({"_id": default, **_accumulate(output, members[-1], v)})
        return out

    return run


def bucket_auto(spec: Any, ctx: Ctx) -> BatchFn:
    args = named_args(spec, ctx, "$bucketAuto", ("groupBy", "buckets"), ("output", "granularity"))
    group_by = compile_expr(args["groupBy"], ctx.at("groupBy")).fn
    buckets = _count_arg(args["buckets"], ctx.at("buckets"), "$bucketAuto.buckets", positive=True)
    if "granularity" in args:
        raise ctx.at("granularity").error(
            "$bucketAuto granularity is not supported yet", hint="omit it to get buckets bounded by the data"
        )
    output = _output_spec(args, ctx)

    def run(docs: list[Document], v: Variables) -> list[Document]:
        keyed = [(None if (x := group_by(doc, v)) is MISSING else x, doc) for doc in docs]
        keyed.sort(key=lambda pair: sort_key(pair[0]))
        if not keyed:
            return []
        size = max(round(len(keyed) / buckets), 1)
        groups: list[list[tuple[Any, Document]]] = []
        for pair in keyed:
            if groups and (
                len(groups[-1]) < size or compare(groups[-1][-1][0], pair[0]) == 0 or len(groups) == buckets
            ):
                groups[-1].append(pair)
            else:
                groups.append([pair])
        out = []
        for i, members in enumerate(groups):
            low = members[0][0]
            high = groups[i + 1][0][0] if i + 1 < len(groups) else members[-1][0]
            out.append({"_id": {"min": low, "max": high}, **_accumulate(output, [d for _, d in members], v)})
        return out

    return run


def _step_value(value: Any, step: Any, unit: str | None, times: int = 1) -> Any:
    if unit is None:
        return value + step * times
    return date_add(value, unit, int(step) * times, UTC)


def densify(spec: Any, ctx: Ctx) -> BatchFn:
    args = named_args(spec, ctx, "$densify", ("field", "range"), ("partitionByFields",))
    field = args["field"]
    if not isinstance(field, str) or field.startswith("$"):
        raise ctx.at("field").error("$densify.field must be a field name (no `$`)")
    parts = split_path(field)
    partition_fields = args.get("partitionByFields", [])
    if not isinstance(partition_fields, list) or not all(isinstance(p, str) for p in partition_fields):
        raise ctx.at("partitionByFields").error("partitionByFields must be an array of field names")
    rng = named_args(args["range"], ctx.at("range"), "$densify.range", ("step", "bounds"), ("unit",))
    step, unit, bounds = rng["step"], rng.get("unit"), rng["bounds"]
    if not is_number(step) or step <= 0:
        raise ctx.at("range", "step").error("step must be a positive number")
    if unit is not None and unit not in UNITS:
        raise ctx.at("range", "unit").error("unknown unit", found=str(unit), valid=list(UNITS))
    if unit is not None and int(step) != step:
        raise ctx.at("range", "step").error("step must be an integer when unit is set")
    if not (bounds in ("full", "partition") or (isinstance(bounds, list) and len(bounds) == 2)):
        raise ctx.at("range", "bounds").error('bounds must be "full", "partition" or [lower, upper]')
    partition_parts = [split_path(p) for p in partition_fields]

    def fill_range(low: Any, high: Any, present: list[Any]) -> list[Any]:
        """Values ``low + k * step`` below ``high`` that no document has yet."""
        have = {hashable(x) for x in present}
        added = []
        value, i = low, 0
        while compare(value, high) < 0:
            if hashable(value) not in have:
                added.append(value)
            i += 1
            value = _step_value(low, step, unit, i)
        return added

    def run(docs: list[Document], _v: Variables) -> list[Document]:
        with_value = [d for d in docs if _is_densifiable(get_path(d, parts), unit)]
        without = [d for d in docs if not _is_densifiable(get_path(d, parts), unit)]
        partitions: dict[Any, list[Document]] = {}
        for doc in with_value:
            key = tuple(hashable(get_path(doc, p)) for p in partition_parts)
            partitions.setdefault(key, []).append(doc)
        all_values = [get_path(d, parts) for d in with_value]
        out: list[Document] = list(without)
        for members in partitions.values():
            members.sort(key=lambda d: sort_key(get_path(d, parts)))
            values = [get_path(d, parts) for d in members]
            if bounds == "partition":
                low, high = values[0], values[-1]
            elif bounds == "full":
                low, high = min(all_values, key=sort_key), max(all_values, key=sort_key)
            else:
                low, high = bounds
            base = members[0]
            template: Document = {}
            for p in partition_parts:
                value = get_path(base, p)
                if value is not MISSING:
                    set_path(template, p, value)
            generated = []
            for value in fill_range(low, high, values):
                new = dict(template)
                set_path(new, parts, value)
                generated.append(new)
            merged = members + generated
            merged.sort(key=lambda d: sort_key(get_path(d, parts)))
            out.extend(merged)
        return out

    return run


def _is_densifiable(value: Any, unit: str | None) -> bool:
    return isinstance(value, dt.datetime) if unit is not None else is_number(value)


def fill(spec: Any, ctx: Ctx) -> BatchFn:
    args = named_args(spec, ctx, "$fill", ("output",), ("partitionBy", "partitionByFields", "sortBy"))
    partition_fn: Callable[[Any, Variables], Any] | None = None
    if "partitionBy" in args and "partitionByFields" in args:
        raise ctx.error("$fill takes partitionBy or partitionByFields, not both")
    if "partitionBy" in args:
        partition_fn = compile_expr(args["partitionBy"], ctx.at("partitionBy")).fn
    elif "partitionByFields" in args:
        fields = [split_path(f) for f in args["partitionByFields"]]
        partition_fn = lambda d, _v: [get_path(d, f) for f in fields]  # noqa: E731
    keys = sort_keys(args["sortBy"], ctx.at("sortBy")) if "sortBy" in args else []
    if not isinstance(args["output"], dict) or not args["output"]:
        raise ctx.at("output").error("$fill.output must map fields to {value: expr} or {method: locf|linear}")
    outputs: list[tuple[tuple[str, ...], str, Fn | None]] = []
    for name, how in args["output"].items():
        octx = ctx.at("output", name)
        if isinstance(how, dict) and set(how) == {"value"}:
            outputs.append((split_path(name), "value", compile_expr(how["value"], octx.at("value")).fn))
        elif isinstance(how, dict) and set(how) == {"method"} and how["method"] in ("locf", "linear"):
            if how["method"] == "linear" and len(keys) != 1:
                raise octx.error("method linear needs sortBy on exactly one field")
            outputs.append((split_path(name), how["method"], None))
        else:
            raise octx.error('each $fill output is {value: <expression>} or {method: "locf" | "linear"}')

    def run(docs: list[Document], v: Variables) -> list[Document]:
        ordered = sort_documents(docs, keys) if keys else list(docs)
        partitions: dict[Any, list[int]] = {}
        result = [dict(d) for d in ordered]
        for i, doc in enumerate(ordered):
            key = hashable(partition_fn(doc, v)) if partition_fn else None
            partitions.setdefault(key, []).append(i)
        for parts, method, fn in outputs:
            for indexes in partitions.values():
                if method == "value":
                    assert fn is not None
                    for i in indexes:
                        if is_nullish(get_path(result[i], parts)):
                            set_path(result[i], parts, fn(ordered[i], v))
                elif method == "locf":
                    _locf(result, indexes, parts)
                else:
                    _linear(result, indexes, parts, keys[0][0])
        return result

    return run


def _locf(docs: list[Document], indexes: list[int], parts: tuple[str, ...]) -> None:
    last: Any = MISSING
    for i in indexes:
        value = get_path(docs[i], parts)
        if is_nullish(value):
            if last is not MISSING:
                set_path(docs[i], parts, last)
        else:
            last = value


def _numeric_position(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp() * 1000
    return float(value)


def _linear(
    docs: list[Document], indexes: list[int], parts: tuple[str, ...], sort_parts: tuple[str, ...]
) -> None:
    known = [i for i in indexes if is_number(get_path(docs[i], parts))]
    for left, right in itertools.pairwise(known):
        start, end = indexes.index(left), indexes.index(right)
        x0, x1 = (
            _numeric_position(get_path(docs[left], sort_parts)),
            _numeric_position(get_path(docs[right], sort_parts)),
        )
        y0, y1 = get_path(docs[left], parts), get_path(docs[right], parts)
        for i in indexes[start + 1 : end]:
            x = _numeric_position(get_path(docs[i], sort_parts))
            ratio = (x - x0) / (x1 - x0) if x1 != x0 else 0
            set_path(docs[i], parts, y0 + (y1 - y0) * ratio)
