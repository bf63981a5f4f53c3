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
from collections.abc import Mapping
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.accumulators import ACCUMULATORS, Accumulator
from fluxion_flows.stages.base import Stage, StageRuntimeError
from fluxion_flows.stages.expressions.core import Ctx, Fn, Variables, compile_expr, unknown_operator
from fluxion_flows.stages.runtime import batch_variables
from fluxion_flows.stages.state import decode, encode
from fluxion_flows.stages.values import MISSING, hashable

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
        self.fields: list[tuple[str, type[Accumulator], Fn]] = []
        self.max_keys = max_keys
        self.policy = "error"
        for name, value in spec.items():
            if name == "_id":
                continue
            if name in _OPTIONS:
                self._option(name, value, ctx.at(name))
                continue
            self.fields.append(self._field(name, value, ctx.at(name)))

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

    def __call__(self, documents: list[Document]) -> list[Document]:
        return self.apply(documents, batch_variables(self._globals))

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        touched: dict[Any, Group] = {}
        spec = self._spec
        try:
            for doc in documents:
                key_value = spec.key_fn(doc, variables)
                key_value = None if key_value is MISSING else key_value
                key = hashable(key_value)
                group = touched.get(key) or self._touch(key, key_value)
                touched[key] = group
                for accumulator, (_, _, fn) in zip(group.accumulators, spec.fields, strict=True):
                    accumulator.add(fn(doc, variables))
        except StageRuntimeError:
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise StageRuntimeError(str(exc), operator=self.name, path=self.path) from exc
        return [self._output(group) for group in touched.values()]

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

    def _output(self, group: Group) -> Document:
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
