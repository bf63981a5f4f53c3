"""Group and window accumulators with explicit, checkpointable state.

Each accumulator object holds the running state of one output field for one
group key. ``snapshot``/``restore`` give the state in JSON-ready form (values
go through :mod:`state` encoding), so a restarted stream continues the same
aggregates instead of starting over. Non-numeric values are ignored by the
numeric accumulators, as in MongoDB.
"""

from __future__ import annotations

import math
from typing import Any

from fluxion_flows.stages.state import decode, encode
from fluxion_flows.stages.values import MISSING, compare, hashable, is_number


class Accumulator:
    """Running state of one accumulator; subclasses define add/result/snapshot/restore."""

    name = ""

    def add(self, value: Any) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    def snapshot(self) -> Any:
        raise NotImplementedError

    def restore(self, state: Any) -> None:
        raise NotImplementedError


class Sum(Accumulator):
    name = "$sum"

    def __init__(self) -> None:
        self.total: Any = 0

    def add(self, value: Any) -> None:
        if value.__class__ is int or value.__class__ is float or is_number(value):
            self.total = self.total + value

    def result(self) -> Any:
        return self.total

    def snapshot(self) -> Any:
        return encode(self.total)

    def restore(self, state: Any) -> None:
        self.total = decode(state)


class Count(Sum):
    name = "$count"

    def add(self, value: Any) -> None:
        self.total += 1


class Avg(Accumulator):
    name = "$avg"

    def __init__(self) -> None:
        self.total: Any = 0
        self.count = 0

    def add(self, value: Any) -> None:
        if is_number(value):
            self.total = self.total + value
            self.count += 1

    def result(self) -> Any:
        return self.total / self.count if self.count else None

    def snapshot(self) -> Any:
        return [encode(self.total), self.count]

    def restore(self, state: Any) -> None:
        self.total, self.count = decode(state[0]), state[1]


class Min(Accumulator):
    name = "$min"
    sign = -1

    def __init__(self) -> None:
        self.value: Any = MISSING

    def add(self, value: Any) -> None:
        if value is None or value is MISSING:
            return
        if self.value is MISSING or compare(value, self.value) * self.sign > 0:
            self.value = value

    def result(self) -> Any:
        return None if self.value is MISSING else self.value

    def snapshot(self) -> Any:
        return encode(self.value)

    def restore(self, state: Any) -> None:
        self.value = decode(state)


class Max(Min):
    name = "$max"
    sign = 1


class Push(Accumulator):
    name = "$push"

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, value: Any) -> None:
        if value is not MISSING:
            self.items.append(value)

    def result(self) -> Any:
        return list(self.items)

    def snapshot(self) -> Any:
        return encode(self.items)

    def restore(self, state: Any) -> None:
        self.items = decode(state)


class AddToSet(Push):
    name = "$addToSet"

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[Any] = set()

    def add(self, value: Any) -> None:
        if value is MISSING:
            return
        key = hashable(value)
        if key not in self.seen:
            self.seen.add(key)
            self.items.append(value)

    def restore(self, state: Any) -> None:
        super().restore(state)
        self.seen = {hashable(v) for v in self.items}


class First(Accumulator):
    name = "$first"

    def __init__(self) -> None:
        self.value: Any = MISSING
        self.seen = False

    def add(self, value: Any) -> None:
        if not self.seen:
            self.value = None if value is MISSING else value
            self.seen = True

    def result(self) -> Any:
        return None if self.value is MISSING else self.value

    def snapshot(self) -> Any:
        return [encode(self.value), self.seen]

    def restore(self, state: Any) -> None:
        self.value, self.seen = decode(state[0]), state[1]


class Last(First):
    name = "$last"

    def add(self, value: Any) -> None:
        self.value = None if value is MISSING else value
        self.seen = True


class MergeObjects(Accumulator):
    name = "$mergeObjects"

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}

    def add(self, value: Any) -> None:
        if value is None or value is MISSING:
            return
        if not isinstance(value, dict):
            raise TypeError(f"$mergeObjects requires object inputs, found {type(value).__name__}")
        self.value.update(value)

    def result(self) -> Any:
        return dict(self.value)

    def snapshot(self) -> Any:
        return encode(self.value)

    def restore(self, state: Any) -> None:
        self.value = decode(state)


class StdDevPop(Accumulator):
    """Welford's online variance: stable, and its state is three numbers."""

    name = "$stdDevPop"

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, value: Any) -> None:
        if is_number(value):
            x = float(value)
            self.n += 1
            delta = x - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (x - self.mean)

    def result(self) -> Any:
        return math.sqrt(self.m2 / self.n) if self.n else None

    def snapshot(self) -> Any:
        return [self.n, encode(self.mean), encode(self.m2)]

    def restore(self, state: Any) -> None:
        self.n, self.mean, self.m2 = state[0], decode(state[1]), decode(state[2])


class StdDevSamp(StdDevPop):
    name = "$stdDevSamp"

    def result(self) -> Any:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None


ACCUMULATORS: dict[str, type[Accumulator]] = {
    cls.name: cls
    for cls in (Sum, Count, Avg, Min, Max, Push, AddToSet, First, Last, MergeObjects, StdDevPop, StdDevSamp)
}
