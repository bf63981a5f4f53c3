"""Stage state in a checkpoint, and which stage of the manifest may take it back.

State is only meaningful to the stage that built it, with the spec it was
built from: a ``$group`` whose accumulators changed would restore counts into
the wrong fields, and a ``$group`` that moved because a stage was inserted
before it would lose its state if it were matched by position alone. So each
entry records the stage's name and a digest of its spec, and on restore:

1. a stage takes the entry under its own key (its manifest index) when the
   name and digest match;
2. otherwise an entry with its name and digest under another key (the stage
   moved);
3. an entry no stage takes (the stage changed or was removed) stops the run
   with :class:`StageStateMismatchError` rather than dropping aggregates
   silently. A run started anywhere but the checkpoint (``startFrom``) starts
   stage state empty, so a replay from ``earliest`` recomputes it: the way
   out the error names.

Entries written before digests existed (plain snapshots) are restored by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fluxion_flows.errors import FluxionError
from fluxion_flows.stages.base import Stage

_FIELDS = frozenset({"stage", "spec", "state"})


class StageStateMismatchError(FluxionError):
    """The checkpoint holds stage state that no stage of the current manifest can take."""


def entry(stage: Stage) -> dict[str, Any]:
    """What the checkpoint stores for one stateful stage."""
    return {"stage": stage.name, "spec": stage.spec_digest, "state": stage.snapshot()}


def restore(stages: Mapping[str, Stage], saved: Mapping[str, Any], pipeline_id: str) -> None:
    """Give each stateful stage (keyed as in the checkpoint) its saved state; raise if any is left over."""
    waiting = {key: stage for key, stage in stages.items() if stage.stateful}
    left = dict(saved)
    for key, stage in list(waiting.items()):
        if key in left and _fits(left[key], stage):
            _load(stage, left.pop(key))
            del waiting[key]
    for stage in waiting.values():
        moved = next((key for key, value in left.items() if _is_entry(value) and _fits(value, stage)), None)
        if moved is not None:
            _load(stage, left.pop(moved))
    if left:
        raise _mismatch(pipeline_id, left, stages)


def _is_entry(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == _FIELDS


def _fits(value: Any, stage: Stage) -> bool:
    if not _is_entry(value):
        return True  # written before digests: the key is all there is to go by
    return bool(value["stage"] == stage.name and value["spec"] == stage.spec_digest)


def _load(stage: Stage, value: Any) -> None:
    stage.restore(value["state"] if _is_entry(value) else value)


def _mismatch(pipeline_id: str, left: dict[str, Any], stages: Mapping[str, Stage]) -> StageStateMismatchError:
    described = []
    for key, value in left.items():
        name = value["stage"] if _is_entry(value) else "a stage"
        now = stages.get(key)
        if now is None:
            described.append(f"`{key}` ({name}: no stage there now)")
        else:
            described.append(f"`{key}` ({name}: the stage at `{now.path}` is now `{now.name}`, spec changed)")
    return StageStateMismatchError(
        f"the checkpoint of pipeline `{pipeline_id}` holds stage state that no stage of the manifest "
        f"can take: {', '.join(described)}; the stateful stages changed since that checkpoint",
        hint=(
            "run the manifest the checkpoint was written with, or recompute the state with a replay "
            "(`--start-from earliest`, or the startFrom parameter with confirmReplay): a replay "
            "starts stage state empty"
        ),
    )
