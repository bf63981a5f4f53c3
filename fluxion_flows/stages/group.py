"""``$group`` over a stream: per-key accumulator state that survives batches and restarts.

After each micro-batch the stage emits the *updated* group documents for the
keys that batch touched (in the order they were first touched), so a sink
receives running aggregates. The state is checkpointed through
``snapshot``/``restore``, so documents delivered before a checkpoint are
never counted twice after a restart.

The number of keys is bounded: ``maxKeys`` in the spec (or the run's
``max_keys``). When a new key would exceed it, ``onMaxKeys: "error"`` (the
default) fails the batch with a clear error; ``"evictOldest"`` drops the
least recently updated group (its next document starts a fresh aggregate).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.accumulators import ACCUMULATORS, Accumulator, Avg, Count, Push, Sum
from fluxion_flows.stages.base import Stage, StageRuntimeError
from fluxion_flows.stages.codegen import Gen, expr_code
from fluxion_flows.stages.expressions.core import Ctx, Fn, Variables, compile_expr, unknown_operator
from fluxion_flows.stages.runtime import batch_variables
from fluxion_flows.stages.state import decode, encode
from fluxion_flows.stages.values import MISSING, hashable, is_number

AddFn = Callable[..., None]

_OPTIONS = ("maxKeys", "onMaxKeys")
_POLICIES = ("error", "evictOldest")


class Group:
    """One group: its ``_id`` value and one accumulator per output field."""

    __slots__ = ("accumulators", "key")

    def __init__(self, key: Any, accumulators: list[Accumulator]) -> None:
        self.key = key
        self.accumulators = accumulators


class GroupSpec:
    """The compiled ``$group`` argument."""

    def __init__(self, spec: Any, ctx: Ctx, max_keys: int | None) -> None:
        if not isinstance(spec, dict) or "_id" not in spec:
            raise ctx.error("$group needs an `_id` expression (use null for one group over everything)")
        self.key_fn: Fn = compile_expr(spec["_id"], ctx.at("_id")).fn
        self.key_source: tuple[Any, Ctx] = (spec["_id"], ctx.at("_id"))
        self.fields: list[tuple[str, type[Accumulator], Fn]] = []
        self.sources: list[tuple[Any, Ctx]] = []  # each field's argument spec, for codegen
        self.max_keys = max_keys
        self.policy = "error"
        for name, value in spec.items():
            if name == "_id":
                continue
            if name in _OPTIONS:
                self._option(name, value, ctx.at(name))
                continue
            self.fields.append(self._field(name, value, ctx.at(name)))
            operator, argument = next(iter(value.items()))
            self.sources.append((argument, ctx.at(name, operator)))

    def _option(self, name: str, value: Any, ctx: Ctx) -> None:
        if name == "maxKeys":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ctx.error("maxKeys must be a positive integer")
            self.max_keys = value
        elif value not in _POLICIES:
            raise ctx.error(
                f"onMaxKeys must be one of {', '.join(_POLICIES)}", found=str(value), valid=_POLICIES
            )
        else:
            self.policy = value

    @staticmethod
    def _field(name: str, value: Any, ctx: Ctx) -> tuple[str, type[Accumulator], Fn]:
        if "." in name or name.startswith("$"):
            raise ctx.error(f"$group output field `{name}` cannot contain `.` or start with `$`")
        if not isinstance(value, dict) or len(value) != 1:
            raise ctx.error(
                f'$group field `{name}` must be an accumulator object such as {{$sum: "$amount"}}'
            )
        operator, argument = next(iter(value.items()))
        accumulator = ACCUMULATORS.get(operator)
        if accumulator is None:
            raise unknown_operator(operator, ctx.at(operator), "accumulator", candidates=ACCUMULATORS)
        if operator == "$count":
            if argument != {}:
                raise ctx.at(operator).error("$count takes no argument: {$count: {}}")
            return name, accumulator, lambda _d, _v: 1
        return name, accumulator, compile_expr(argument, ctx.at(operator)).fn


class GroupStage(Stage):
    """Stateful ``$group``: keyed accumulators kept across micro-batches."""

    stateful = True

    def __init__(self, name: str, path: str, spec: GroupSpec, globals_: Mapping[str, Any]) -> None:
        super().__init__(name, path)
        self._spec = spec
        self._globals = globals_
        self._groups: OrderedDict[Any, Group] = OrderedDict()
        self._add = _generate_add(spec)
        self._output = _generate_output(spec) or self._output_closures

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self.apply(documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        touched: dict[Any, Group] = {}
        try:
            if self._add is not None:
                self._add(documents, variables, touched, self._touch, self._add_one)
            else:
                for doc in documents:
                    self._add_one(doc, variables, touched)
        except StageRuntimeError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise StageRuntimeError(str(exc), operator=self.name, path=self.path) from exc
        return [self._output(group) for group in touched.values()]

    def _add_one(self, doc: Document, variables: Variables, touched: dict[Any, Group]) -> None:
        spec = self._spec
        key_value = spec.key_fn(doc, variables)
        key_value = None if key_value is MISSING else key_value
        key = hashable(key_value)
        group = touched.get(key) or self._touch(key, key_value)
        touched[key] = group
        for accumulator, (_, _, fn) in zip(group.accumulators, spec.fields, strict=True):
            accumulator.add(fn(doc, variables))

    def _touch(self, key: Any, key_value: Any) -> Group:
        group = self._groups.get(key)
        if group is not None:
            self._groups.move_to_end(key)
            return group
        limit = self._spec.max_keys
        if limit is not None and len(self._groups) >= limit:
            if self._spec.policy == "error":
                raise StageRuntimeError(
                    f"group state reached maxKeys={limit}; raise maxKeys or set onMaxKeys: evictOldest",
                    operator=self.name,
                    path=self.path,
                )
            self._groups.popitem(last=False)
        group = Group(key_value, [cls() for _, cls, _ in self._spec.fields])
        self._groups[key] = group
        return group

    def _output_closures(self, group: Group) -> Document:
        out: Document = {"_id": group.key}
        for accumulator, (name, _, _) in zip(group.accumulators, self._spec.fields, strict=True):
            out[name] = accumulator.result()
        return out

    def snapshot(self) -> Any:
        return {
            "groups": [
                [encode(group.key), [acc.snapshot() for acc in group.accumulators]]
                for group in self._groups.values()
            ]
        }

    def restore(self, state: Any) -> None:
        self._groups.clear()
        if not state:
            return
        for raw_key, raw_accumulators in state["groups"]:
            key_value = decode(raw_key)
            accumulators = [cls() for _, cls, _ in self._spec.fields]
            for accumulator, saved in zip(accumulators, raw_accumulators, strict=True):
                accumulator.restore(saved)
            self._groups[hashable(key_value)] = Group(key_value, accumulators)

    def state_size(self) -> int:
        return len(self._groups)

    def results(self) -> list[Document]:
        """Every group's current document (e.g. for a final report)."""
        return [self._output(group) for group in self._groups.values()]


def build_group(
    spec: Any, ctx: Ctx, name: str, max_keys: int | None, globals_: Mapping[str, Any]
) -> GroupStage:
    return GroupStage(name, ctx.where, GroupSpec(spec, ctx, max_keys), globals_)


def _generate_add(spec: GroupSpec) -> AddFn | None:
    """The per-document loop of ``apply`` as one generated function (see :mod:`codegen`).

    Same steps and order as the closure loop: key (missing -> null), the group
    touched (``touch`` creates it or enforces ``maxKeys``), then each
    accumulator's expression and update, inline for ``$sum $count $avg $push``.
    """
    g = Gen()
    g.hoist = True
    key = expr_code(*spec.key_source, g)
    body = [f"    k = {key.text}"]
    if key.missing:
        body.append(f"    if k is {g.missing}: k = None")
    plain = f"k.__class__ is {g.bind(str)} or k.__class__ is {g.bind(int)}"
    body += [
        f"    h = k if {plain} else {g.bind(hashable)}(k)",
        "    g = touched.get(h)",
        "    if g is None:",
        "        g = touch(h, k)",
        "        touched[h] = g",
        "    a = g.accumulators",
    ]
    number = f"(c := x.__class__) is {g.bind(int)} or c is {g.bind(float)} or {g.bind(is_number)}(x)"
    for index, ((_, cls, _), (argument, ctx)) in enumerate(zip(spec.fields, spec.sources, strict=True)):
        if cls is Count:
            body.append(f"    a[{index}].total += 1")
            continue
        body.append(f"    x = {expr_code(argument, ctx, g).text}")
        if cls is Sum:
            body += [f"    if {number}:", f"        s = a[{index}]", "        s.total = s.total + x"]
        elif cls is Avg:
            body += [
                f"    if {number}:",
                f"        s = a[{index}]",
                "        s.total = s.total + x",
                "        s.count += 1",
            ]
        elif cls is Push:
            body.append(f"    if x is not {g.missing}: a[{index}].items.append(x)")
        else:
            body.append(f"    a[{index}].add(x)")
    guard = [
        "for d in docs:",
        f"    if d.__class__ is not {g.bind(dict)}:",
        "        slow(d, v, touched)",
        "        continue",
    ]
    body = guard + [f"    {line}" for line in g.take_setup()] + body
    try:
        run: AddFn = g.build("docs, v, touched, touch, slow", body)
    except (SyntaxError, RecursionError, MemoryError):  # pragma: no cover - pathological nesting
        return None
    return run


def _generate_output(spec: GroupSpec) -> Callable[[Group], Document] | None:
    """``{_id, field: result}`` for one group, reading the accumulators' state directly.

    ``$push`` (like every container accumulator) hands out a copy: the stage
    keeps appending to its own list, and a sink or later stage must neither
    see an emitted document change afterwards nor be able to change the state.
    """
    g = Gen()
    items = [f"{g.bind('_id')}: group.key"]
    for index, (name, cls, _) in enumerate(spec.fields):
        if cls is Sum or cls is Count:
            value = f"a[{index}].total"
        elif cls is Avg:
            value = f"(s.total / s.count if (s := a[{index}]).count else None)"
        elif cls is Push:
            value = f"{g.bind(list)}(a[{index}].items)"
        else:
            value = f"a[{index}].result()"
        items.append(f"{g.bind(name)}: {value}")
    try:
        run: Callable[[Group], Document] = g.build(
            "group", ["a = group.accumulators", f"return {{{', '.join(items)}}}"]
        )
    except (SyntaxError, RecursionError, MemoryError):  # pragma: no cover - pathological nesting
        return None
    return run
