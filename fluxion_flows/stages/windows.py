"""``$setWindowFields`` over a stream, with bounded windows and checkpointed state.

Per-document mode (MongoDB's): every input document is emitted once with its
window outputs, as soon as its window is complete. Windows are per partition
(``partitionBy``) over documents in ``sortBy`` order; documents of a batch are
sorted before processing and later batches are assumed to continue the order.

* ``documents: [lo, hi]`` (integers, ``"current"``): a document is emitted
  once ``hi`` later documents of its partition have arrived; the last ``-lo``
  earlier ones are kept for later windows.
* ``range: [lo, hi]`` (numbers, with ``unit`` for date sort keys): emitted
  once a later sort value passes its ``+hi``; a bound of ``"current"`` or 0
  includes the documents seen so far with the same sort value.
* ``["unbounded", "current"]`` is supported for accumulators (running totals);
  other unbounded windows are rejected because their state would not be bounded.
* ``$rank``, ``$denseRank``, ``$shift``, ``$expMovingAvg`` keep per-partition counters.

Time-window mode (Fluxion's extension, ``window: {tumbling: {size, unit}}`` or
``{hopping: {size, hop, unit}}``): accumulators are computed per partition and
window, and one document ``{partition, windowStart, windowEnd, ...outputs}`` is
emitted when a later document of the partition reaches the window's end.
``flush()`` emits the windows still open (call it at the end of a finite stream).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.accumulators import ACCUMULATORS, Accumulator
from fluxion_flows.stages.base import Stage, StageRuntimeError
from fluxion_flows.stages.batch import sort_documents, sort_keys
from fluxion_flows.stages.expressions.conversion import date_to_ms, ms_to_date
from fluxion_flows.stages.expressions.core import (
    Ctx,
    Fn,
    Variables,
    compile_expr,
    named_args,
    unknown_operator,
)
from fluxion_flows.stages.paths import get_path, set_path
from fluxion_flows.stages.runtime import batch_variables
from fluxion_flows.stages.state import decode, encode
from fluxion_flows.stages.values import MISSING, hashable, is_number

_UNIT_MS = {
    "week": 604_800_000,
    "day": 86_400_000,
    "hour": 3_600_000,
    "minute": 60_000,
    "second": 1000,
    "millisecond": 1,
}
_RANKS = ("$rank", "$denseRank")
_SPECIAL = ("$shift", "$derivative", "$integral", "$expMovingAvg", *_RANKS)
WINDOW_FUNCTIONS = (*_SPECIAL, *ACCUMULATORS)


def _position(value: Any) -> float:
    """Sort values as numbers: dates in milliseconds."""
    if isinstance(value, dt.datetime):
        return float(date_to_ms(value))
    if is_number(value):
        return float(value)
    raise TypeError(f"range windows need numeric or date sort values, found {type(value).__name__}")


@dataclass
class Output:
    """One output field: function, its input, and its window."""

    name: str
    function: str
    input: Fn
    kind: str = "none"  # none | documents | range | running
    low: float = 0
    high: float = 0
    unit_ms: float = 1
    by: int = 0
    default: Any = None
    alpha: float = 0.0


@dataclass
class Entry:
    """A document seen in a partition: sort position, input values, and the document if not yet emitted."""

    position: Any
    inputs: list[Any]
    doc: Document | None
    rank: int = 0
    dense: int = 0


class Partition:
    """Per-partition state: recent entries, pending documents and counters."""

    def __init__(self, outputs: list[Output]) -> None:
        self.entries: list[Entry] = []
        self.pending_from = 0
        self.count = 0
        self.rank = 0
        self.dense = 0
        self.last_sort: Any = MISSING
        self.ema: list[Any] = [MISSING] * len(outputs)
        self.running: list[Accumulator | None] = [
            ACCUMULATORS[o.function]() if o.kind == "running" else None for o in outputs
        ]


def _bound(value: Any, ctx: Ctx, what: str) -> float:
    if value == "current":
        return 0
    if is_number(value):
        return float(value)
    raise ctx.error(
        f'window {what} bound must be a number or "current"', hint="streaming windows must be bounded"
    )


def _parse_output(name: str, spec: Any, ctx: Ctx, has_sort: bool) -> Output:
    if not isinstance(spec, dict):
        raise ctx.error(f"output `{name}` must be {{$function: ..., window: {{...}}}}")
    functions = [k for k in spec if k != "window"]
    if len(functions) != 1:
        raise ctx.error(f"output `{name}` needs exactly one window function")
    function = functions[0]
    fctx = ctx.at(function)
    if function not in WINDOW_FUNCTIONS:
        raise unknown_operator(function, fctx, "window function", candidates=WINDOW_FUNCTIONS)
    argument = spec[function]
    window = spec.get("window")
    out = Output(name, function, lambda _d, _v: None)
    if function in _RANKS:
        if argument != {} or not has_sort:
            raise fctx.error(f"{function} takes {{}} and needs sortBy")
        return out
    if function == "$shift":
        args = named_args(argument, fctx, "$shift", ("output", "by"), ("default",))
        if not isinstance(args["by"], int) or isinstance(args["by"], bool):
            raise fctx.at("by").error("$shift.by must be an integer")
        out.input, out.by, out.default = (
            compile_expr(args["output"], fctx.at("output")).fn,
            args["by"],
            args.get("default"),
        )
        return out
    if function == "$expMovingAvg":
        args = named_args(argument, fctx, "$expMovingAvg", ("input",), ("N", "alpha"))
        if ("N" in args) == ("alpha" in args):
            raise fctx.error("$expMovingAvg takes exactly one of N or alpha")
        out.alpha = 2 / (args["N"] + 1) if "N" in args else float(args["alpha"])
        out.input = compile_expr(args["input"], fctx.at("input")).fn
        return out
    if function in ("$derivative", "$integral"):
        args = named_args(argument, fctx, function, ("input",), ("unit",))
        out.input = compile_expr(args["input"], fctx.at("input")).fn
        out.unit_ms = _UNIT_MS.get(args.get("unit", "millisecond"), 1) if "unit" in args else 0
        out.default = args.get("unit")
        if window is None:
            raise fctx.error(f"{function} needs a window")
    elif function == "$count":
        out.input = lambda _d, _v: 1
    else:
        out.input = compile_expr(argument, fctx).fn
    if window is None:
        raise ctx.error(
            f"output `{name}` needs a bounded window, e.g. window: {{documents: [-2, 0]}}",
            hint="streaming windows must be bounded",
        )
    _parse_window(out, window, ctx.at("window"))
    return out


def _parse_window(out: Output, window: Any, ctx: Ctx) -> None:
    if not isinstance(window, dict) or not ({"documents", "range"} & set(window)):
        raise ctx.error("window must be {documents: [lo, hi]} or {range: [lo, hi], unit}")
    kind = "documents" if "documents" in window else "range"
    bounds = window[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ctx.at(kind).error("window bounds are [lower, upper]")
    if bounds == ["unbounded", "current"] and out.function in ACCUMULATORS:
        out.kind = "running"
        return
    out.kind = kind
    out.low, out.high = (
        _bound(bounds[0], ctx.at(kind, 0), "lower"),
        _bound(bounds[1], ctx.at(kind, 1), "upper"),
    )
    if out.low > out.high:
        raise ctx.at(kind).error("window lower bound must not exceed the upper bound")
    if kind == "documents" and (out.low != int(out.low) or out.high != int(out.high)):
        raise ctx.at(kind).error("documents window bounds must be integers")
    if kind == "range" and "unit" in window:
        if window["unit"] not in _UNIT_MS:
            raise ctx.at("unit").error("unknown unit", found=str(window["unit"]), valid=list(_UNIT_MS))
        out.low, out.high = out.low * _UNIT_MS[window["unit"]], out.high * _UNIT_MS[window["unit"]]


class SetWindowFieldsStage(Stage):
    """Per-document windows (see module docstring)."""

    stateful = True

    def __init__(
        self, name: str, path: str, spec: Any, ctx: Ctx, max_keys: int | None, globals_: Mapping[str, Any]
    ) -> None:
        super().__init__(name, path)
        args = named_args(spec, ctx, "$setWindowFields", ("output",), ("partitionBy", "sortBy"))
        self._partition_fn = (
            compile_expr(args["partitionBy"], ctx.at("partitionBy")).fn if "partitionBy" in args else None
        )
        self._keys = sort_keys(args["sortBy"], ctx.at("sortBy")) if "sortBy" in args else []
        if len(self._keys) > 1:
            raise ctx.at("sortBy").error("streaming windows sort by exactly one field")
        if not isinstance(args["output"], dict) or not args["output"]:
            raise ctx.at("output").error("output must map field names to window functions")
        self._outputs = [
            _parse_output(k, v, ctx.at("output", k), bool(self._keys)) for k, v in args["output"].items()
        ]
        if any(o.kind == "range" for o in self._outputs) and not self._keys:
            raise ctx.at("sortBy").error("range windows need sortBy on a numeric or date field")
        self._lookback = max(
            [-o.low for o in self._outputs if o.kind == "documents"]
            + [-min(0, o.by) for o in self._outputs]
            + [0]
        )
        self._max_keys = max_keys
        self._globals = globals_
        self._partitions: dict[Any, tuple[Any, Partition]] = {}

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self.apply(documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        ordered = sort_documents(documents, self._keys) if self._keys else documents
        emitted: list[Document] = []
        try:
            for doc in ordered:
                partition = self._partition(doc, variables)
                sort_value = get_path(doc, self._keys[0][0]) if self._keys else None
                inputs = [o.input(doc, variables) for o in self._outputs]
                self._rank(partition, sort_value)
                partition.entries.append(Entry(sort_value, inputs, doc, partition.rank, partition.dense))
                emitted.extend(self._ready(partition, final=False))
        except StageRuntimeError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise StageRuntimeError(str(exc), operator=self.name, path=self.path) from exc
        return emitted

    def flush(self) -> list[Document]:
        """Emit every pending document, treating the stream as ended."""
        out: list[Document] = []
        for _, partition in self._partitions.values():
            out.extend(self._ready(partition, final=True))
        return out

    def _partition(self, doc: Document, variables: Variables) -> Partition:
        value = self._partition_fn(doc, variables) if self._partition_fn else None
        key = hashable(None if value is MISSING else value)
        found = self._partitions.get(key)
        if found is None:
            if self._max_keys is not None and len(self._partitions) >= self._max_keys:
                raise StageRuntimeError(
                    f"window state reached maxKeys={self._max_keys} partitions",
                    operator=self.name,
                    path=self.path,
                )
            found = (None if value is MISSING else value, Partition(self._outputs))
            self._partitions[key] = found
        return found[1]

    def _rank(self, partition: Partition, sort_value: Any) -> None:
        partition.count += 1
        if partition.last_sort is MISSING or hashable(sort_value) != hashable(partition.last_sort):
            partition.rank = partition.count
            partition.dense += 1
        partition.last_sort = sort_value

    def _complete(self, partition: Partition, index: int, final: bool) -> bool:
        if final:
            return True
        entries = partition.entries
        newest = len(entries) - 1
        for o in self._outputs:
            if o.kind == "documents" and index + o.high > newest:
                return False
            if o.function == "$shift" and index + o.by > newest:
                return False
            if o.kind == "range" and o.high > 0 and not _passed(entries[newest], entries[index], o.high):
                return False
        return True

    def _ready(self, partition: Partition, final: bool) -> list[Document]:
        out = []
        entries = partition.entries
        while partition.pending_from < len(entries) and self._complete(
            partition, partition.pending_from, final
        ):
            index = partition.pending_from
            out.append(self._emit(partition, index))
            partition.pending_from += 1
        self._prune(partition)
        return out

    def _emit(self, partition: Partition, index: int) -> Document:
        entry = partition.entries[index]
        assert entry.doc is not None
        doc = dict(entry.doc)
        entry.doc = None
        for i, o in enumerate(self._outputs):
            value = self._value(partition, index, i, o)
            if value is not MISSING:
                set_path(doc, tuple(o.name.split(".")), value)
        return doc

    def _value(self, partition: Partition, index: int, i: int, o: Output) -> Any:
        entries = partition.entries
        if o.function == "$rank":
            return entries[index].rank
        if o.function == "$denseRank":
            return entries[index].dense
        if o.function == "$shift":
            target = index + o.by
            return entries[target].inputs[i] if 0 <= target < len(entries) else o.default
        if o.function == "$expMovingAvg":
            x = entries[index].inputs[i]
            if not is_number(x):
                return None
            prev = partition.ema[i]
            partition.ema[i] = x if prev is MISSING else o.alpha * x + (1 - o.alpha) * prev
            return partition.ema[i]
        if o.kind == "running":
            running = partition.running[i]
            assert running is not None
            running.add(entries[index].inputs[i])
            return running.result()
        window = self._window(entries, index, o)
        if o.function in ("$derivative", "$integral"):
            return _calculus(o, [(entries[j].position, entries[j].inputs[i]) for j in window])
        accumulator = ACCUMULATORS[o.function]()
        for j in window:
            accumulator.add(entries[j].inputs[i])
        return accumulator.result()

    @staticmethod
    def _window(entries: list[Entry], index: int, o: Output) -> range:
        if o.kind == "documents":
            return range(max(0, index + int(o.low)), min(len(entries), index + int(o.high) + 1))
        here = _position(entries[index].position)
        members = [j for j, e in enumerate(entries) if here + o.low <= _position(e.position) <= here + o.high]
        return range(members[0], members[-1] + 1) if members else range(0)

    def _prune(self, partition: Partition) -> None:
        """Drop entries no pending or future document can still see."""
        entries = partition.entries
        keep_from = max(0, partition.pending_from - int(self._lookback))
        lows = [o.low for o in self._outputs if o.kind == "range"]
        if lows and entries:
            reference = min(partition.pending_from, len(entries) - 1)
            floor = _position(entries[reference].position) + min(lows)
            needed = next((j for j, e in enumerate(entries) if _position(e.position) >= floor), reference)
            keep_from = min(keep_from, needed)
        if keep_from > 0:
            del entries[:keep_from]
            partition.pending_from -= keep_from

    def snapshot(self) -> Any:
        return {
            "partitions": [
                {
                    "key": encode(key),
                    "entries": [
                        [encode(e.position), encode(e.inputs), encode(e.doc), e.rank, e.dense]
                        for e in p.entries
                    ],
                    "pendingFrom": p.pending_from,
                    "counters": [p.count, p.rank, p.dense, encode(p.last_sort)],
                    "ema": encode(p.ema),
                    "running": [r.snapshot() if r is not None else None for r in p.running],
                }
                for key, p in self._partitions.values()
            ]
        }

    def restore(self, state: Any) -> None:
        self._partitions.clear()
        for saved in (state or {}).get("partitions", []):
            partition = Partition(self._outputs)
            partition.entries = [
                Entry(decode(p), decode(i), decode(d), r, dr) for p, i, d, r, dr in saved["entries"]
            ]
            partition.pending_from = saved["pendingFrom"]
            count, rank, dense, last = saved["counters"]
            partition.count, partition.rank, partition.dense, partition.last_sort = (
                count,
                rank,
                dense,
                decode(last),
            )
            partition.ema = decode(saved["ema"])
            for running, raw in zip(partition.running, saved["running"], strict=True):
                if running is not None:
                    running.restore(raw)
            key = decode(saved["key"])
            self._partitions[hashable(key)] = (key, partition)

    def state_size(self) -> int:
        return sum(len(p.entries) for _, p in self._partitions.values()) + len(self._partitions)


def _passed(newest: Entry, entry: Entry, high: float) -> bool:
    """A later sort value has gone beyond the entry's window: no more documents can join it."""
    return _position(newest.position) > _position(entry.position) + high


def _calculus(o: Output, points: list[tuple[Any, Any]]) -> Any:
    numeric = [(_position(x), float(y)) for x, y in points if is_number(y)]
    if len(numeric) < 2:
        return None
    scale = o.unit_ms or 1
    if o.function == "$derivative":
        (x0, y0), (x1, y1) = numeric[0], numeric[-1]
        return (y1 - y0) / ((x1 - x0) / scale) if x1 != x0 else None
    area = 0.0
    for (xa, ya), (xb, yb) in itertools.pairwise(numeric):
        area += (xb - xa) / scale * (ya + yb) / 2
    return area


class TimeWindowStage(Stage):
    """Tumbling/hopping time windows per partition, emitted when they close (module docstring)."""

    stateful = True

    def __init__(
        self, name: str, path: str, spec: Any, ctx: Ctx, max_keys: int | None, globals_: Mapping[str, Any]
    ) -> None:
        super().__init__(name, path)
        args = named_args(spec, ctx, "$setWindowFields", ("output", "sortBy", "window"), ("partitionBy",))
        keys = sort_keys(args["sortBy"], ctx.at("sortBy"))
        if len(keys) != 1 or keys[0][1]:
            raise ctx.at("sortBy").error("time windows need sortBy on one ascending time field")
        self._time = keys[0][0]
        self._size, self._hop, self._dates = self._parse_window(args["window"], ctx.at("window"))
        self._partition_fn = (
            compile_expr(args["partitionBy"], ctx.at("partitionBy")).fn if "partitionBy" in args else None
        )
        self._fields: list[tuple[str, type[Accumulator], Fn]] = []
        for field, value in args["output"].items():
            fctx = ctx.at("output", field)
            if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ACCUMULATORS:
                raise fctx.error('time-window outputs are accumulators, e.g. {$sum: "$amount"}')
            op, arg = next(iter(value.items()))
            fn = (lambda _d, _v: 1) if op == "$count" else compile_expr(arg, fctx.at(op)).fn
            self._fields.append((field, ACCUMULATORS[op], fn))
        self._max_keys = max_keys
        self._globals = globals_
        self._open: dict[tuple[Any, float], tuple[Any, list[Accumulator]]] = {}
        self._watermark: dict[Any, tuple[Any, float]] = {}
        self.late = 0

    @staticmethod
    def _parse_window(window: Any, ctx: Ctx) -> tuple[float, float, bool]:
        if (
            not isinstance(window, dict)
            or len(window) != 1
            or next(iter(window)) not in ("tumbling", "hopping")
        ):
            raise ctx.error("window must be {tumbling: {size, unit}} or {hopping: {size, hop, unit}}")
        kind, options = next(iter(window.items()))
        required = ("size", "hop") if kind == "hopping" else ("size",)
        opts = named_args(options, ctx.at(kind), kind, required, ("unit",))
        scale = 1.0
        if "unit" in opts:
            if opts["unit"] not in _UNIT_MS:
                raise ctx.at(kind, "unit").error(
                    "unknown unit", found=str(opts["unit"]), valid=list(_UNIT_MS)
                )
            scale = _UNIT_MS[opts["unit"]]
        size = opts["size"]
        hop = opts.get("hop", size)
        if not is_number(size) or size <= 0 or not is_number(hop) or hop <= 0 or hop > size:
            raise ctx.at(kind).error("size and hop must be positive numbers with hop <= size")
        return float(size) * scale, float(hop) * scale, "unit" in opts

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self.apply(documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        out: list[Document] = []
        ordered = sort_documents(documents, [(self._time, False)])
        try:
            for doc in ordered:
                out.extend(self._add(doc, variables))
        except StageRuntimeError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise StageRuntimeError(str(exc), operator=self.name, path=self.path) from exc
        return out

    def _add(self, doc: Document, variables: Variables) -> list[Document]:
        t_value = get_path(doc, self._time)
        if not (is_number(t_value) or isinstance(t_value, dt.datetime)):
            return []
        t = _position(t_value)
        pvalue = self._partition_fn(doc, variables) if self._partition_fn else None
        pvalue = None if pvalue is MISSING else pvalue
        pkey = hashable(pvalue)
        closed = self._advance(pkey, pvalue, t)
        first_start = (t - self._size) // self._hop * self._hop + self._hop
        start = first_start
        added = False
        while start <= t:
            if start + self._size > self._watermark_floor(pkey):
                key = (pkey, start)
                if key not in self._open:
                    if self._max_keys is not None and len(self._open) >= self._max_keys:
                        raise StageRuntimeError(
                            f"window state reached maxKeys={self._max_keys} open windows",
                            operator=self.name,
                            path=self.path,
                        )
                    self._open[key] = (pvalue, [cls() for _, cls, _ in self._fields])
                for accumulator, (_, _, fn) in zip(self._open[key][1], self._fields, strict=True):
                    accumulator.add(fn(doc, variables))
                added = True
            start += self._hop
        if not added:
            self.late += 1
        return closed

    def _watermark_floor(self, pkey: Any) -> float:
        return self._watermark.get(pkey, (None, float("-inf")))[1]

    def _advance(self, pkey: Any, pvalue: Any, t: float) -> list[Document]:
        if t <= self._watermark_floor(pkey):
            return []
        self._watermark[pkey] = (pvalue, t)
        ready = sorted(k for k in self._open if k[0] == pkey and k[1] + self._size <= t)
        return [self._close(k) for k in ready]

    def _close(self, key: tuple[Any, float]) -> Document:
        pvalue, accumulators = self._open.pop(key)
        start = key[1]
        bounds = (
            (ms_to_date(start), ms_to_date(start + self._size))
            if self._dates
            else (start, start + self._size)
        )
        out: Document = {"partition": pvalue, "windowStart": bounds[0], "windowEnd": bounds[1]}
        for accumulator, (name, _, _) in zip(accumulators, self._fields, strict=True):
            out[name] = accumulator.result()
        return out

    def flush(self) -> list[Document]:
        return [self._close(k) for k in sorted(self._open, key=lambda k: (str(k[0]), k[1]))]

    def snapshot(self) -> Any:
        return {
            "open": [
                [encode(pvalue), start, [a.snapshot() for a in accs]]
                for (_, start), (pvalue, accs) in self._open.items()
            ],
            "watermarks": [[encode(pvalue), t] for pvalue, t in self._watermark.values()],
            "late": self.late,
        }

    def restore(self, state: Any) -> None:
        self._open.clear()
        self._watermark.clear()
        if not state:
            return
        for raw_pvalue, start, raw_accs in state["open"]:
            pvalue = decode(raw_pvalue)
            accs = [cls() for _, cls, _ in self._fields]
            for acc, saved in zip(accs, raw_accs, strict=True):
                acc.restore(saved)
            self._open[(hashable(pvalue), start)] = (pvalue, accs)
        for raw_pvalue, t in state["watermarks"]:
            pvalue = decode(raw_pvalue)
            self._watermark[hashable(pvalue)] = (pvalue, t)
        self.late = state.get("late", 0)

    def state_size(self) -> int:
        return len(self._open)


def build_set_window_fields(
    spec: Any, ctx: Ctx, name: str, max_keys: int | None, globals_: Mapping[str, Any]
) -> Stage:
    if isinstance(spec, dict) and "window" in spec:
        return TimeWindowStage(name, ctx.where, spec, ctx, max_keys, globals_)
    return SetWindowFieldsStage(name, ctx.where, spec, ctx, max_keys, globals_)
