"""``$sampleRate``: keep each document with probability ``rate``.

``{rate, seed}`` makes the sample reproducible: a document is kept when the
next draw of ``random.Random(seed)`` is <= rate (with seed 42 and rate 0.5,
events 1-4 keep 2, 3 and 4). The generator continues across micro-batches,
and its state is checkpointed, so a restarted stream makes the same choices.
"""

from __future__ import annotations

import random
from typing import Any

from fluxion_flows.spi.batch import Document
from fluxion_flows.stages.base import Stage
from fluxion_flows.stages.expressions.core import Ctx, Variables
from fluxion_flows.stages.values import is_number


class SampleRateStage(Stage):
    def __init__(self, name: str, path: str, rate: float, seed: int | None) -> None:
        super().__init__(name, path)
        self.rate = rate
        self.seed = seed
        self.stateful = seed is not None
        self._random = random.Random(seed)

    def __call__(self, documents: list[Document]) -> list[Document]:
        draw, rate = self._random.random, self.rate
        return [doc for doc in documents if draw() <= rate]

    def apply(self, documents: list[Document], variables: Variables) -> list[Document]:
        return self(documents)

    def snapshot(self) -> Any:
        if self.seed is None:
            return None
        version, internal, gauss = self._random.getstate()
        return {"version": version, "state": list(internal), "gauss": gauss}

    def restore(self, state: Any) -> None:
        if state:
            self._random.setstate((state["version"], tuple(state["state"]), state["gauss"]))

    def state_size(self) -> int:
        return 1 if self.seed is not None else 0


def build_sample_rate(spec: Any, ctx: Ctx, name: str) -> SampleRateStage:
    options = spec if isinstance(spec, dict) else {"rate": spec}
    for key in options:
        if key not in ("rate", "seed"):
            raise ctx.at(key).error(
                f"unknown $sampleRate option `{key}`", found=str(key), valid=["rate", "seed"]
            )
    rate: Any = options.get("rate")
    seed: Any = options.get("seed")
    if not is_number(rate) or not 0 <= rate <= 1:
        raise ctx.error(
            "$sampleRate rate must be a number between 0 and 1, e.g. 0.5 or {rate: 0.5, seed: 42}"
        )
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ctx.at("seed").error("$sampleRate seed must be an integer")
    return SampleRateStage(name, ctx.where, float(rate), seed)
