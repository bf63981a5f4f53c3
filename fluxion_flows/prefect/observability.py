"""What an operator sees of a running pipeline in Prefect, aggregated to fit Cloud rate limits.

A Hobby workspace allows 625 API calls and 2,000 logs+events per minute, for
all its pipelines together. So nothing here is per batch: on every metrics
tick (``runtime.metricsInterval``, default 5 s) the observer writes one summary
log line, one ``fluxion.pipeline.heartbeat`` event, and updates the metrics
table artifact (and the progress artifact in drain mode) *in place*, by id.
``fluxion.pipeline.checkpointed`` and ``fluxion.batch.dead-lettered`` are
emitted at most once per tick, carrying how many happened since the last one.
Per pipeline and minute at the defaults that is about 12 log lines and 24-36
events, and about 30-40 API calls including checkpoints (see the Hobby test).

Every text that leaves the process goes through :class:`Scrubber`, which
replaces the values of the pipeline's secrets, in case a connector put one
in an error message.

Event names and resource ids (automations match on these):

- ``fluxion.pipeline.started`` / ``.heartbeat`` / ``.checkpointed`` / ``.stopped``,
  ``fluxion.batch.dead-lettered``
- resource ``fluxion.pipeline.<manifest id>.<operation>``, related: the flow run
  (role ``flow-run``) and, when there is one, the deployment (role ``deployment``).

Artifacts: ``fluxion-<pipeline slug>-metrics`` (table: one row per stage and
sink) and ``fluxion-<pipeline slug>-progress`` (drain mode: percent of the
backlog seen at start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, acreate_table_artifact, aupdate_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.events import emit_event

from fluxion_flows.executor import ExecutorListener
from fluxion_flows.prefect import names
from fluxion_flows.spi import ConnectorConfig, RunMode, Secret


class Scrubber:
    """Replaces known secret values in outgoing text (defence in depth behind ``Secret``'s masking)."""

    def __init__(self, configs: Iterable[ConnectorConfig | None]) -> None:
        found: set[str] = set()
        for config in configs:
            if config is not None:
                _collect(config.values, found)
                _collect(config.properties, found)
        self.secrets = sorted((s for s in found if len(s) >= 4), key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "***")
        return value

    def tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        return value


def _collect(value: Any, found: set[str]) -> None:
    if isinstance(value, Secret):
        found.add(value.reveal())
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, found)


_HEARTBEAT_KEYS = (
    "documentsIn",
    "documentsOut",
    "rate",
    "lag",
    "retries",
    "failures",
    "skipped",
    "deadLettered",
    "checkpoints",
    "checkpointAgeSeconds",
    "uptimeSeconds",
)


class PrefectObserver(ExecutorListener):
    """Turns executor hooks into Prefect logs, events and artifacts at a bounded rate."""

    def __init__(
        self,
        pipeline_id: str,
        *,
        mode: RunMode,
        interval: float,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        scrubber: Scrubber,
        flow_run: tuple[UUID, str] | None = None,
        deployment_id: UUID | None = None,
        description: dict[str, Any] | None = None,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.mode = mode
        self.interval = interval
        self.logger = logger
        self.scrubber = scrubber
        self.description = description or {}
        self.resource = {
            "prefect.resource.id": names.resource_id(pipeline_id),
            "prefect.resource.name": pipeline_id,
        }
        self.related: list[dict[str, str]] = []
        if flow_run is not None:
            self.related.append(
                {
                    "prefect.resource.id": f"prefect.flow-run.{flow_run[0]}",
                    "prefect.resource.role": "flow-run",
                    "prefect.resource.name": flow_run[1],
                }
            )
        if deployment_id is not None:
            self.related.append(
                {
                    "prefect.resource.id": f"prefect.deployment.{deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        self.table_id: UUID | None = None
        self.progress_id: UUID | None = None
        self._artifacts: asyncio.Task[None] | None = None
        self.latest: dict[str, Any] = {}
        self._last_report = 0.0
        self._last_out = 0
        self._pending_checkpoint: dict[str, Any] | None = None
        self._checkpoints_since = 0
        self._last_checkpoint_event = 0.0
        self._dead_letters: list[dict[str, Any]] = []
        self._last_dead_letter_event = 0.0

    # ------------------------------------------------------------------ hooks
    async def on_start(self, pipeline_id: str) -> None:
        self._emit(names.EVENT_STARTED, {"mode": self.mode.value, "pipeline": self.description})
        # Created beside the first batches rather than before them: the API calls would delay the
        # first delivery (a restart's too), and the artifacts are first updated an interval later.
        self._artifacts = asyncio.create_task(self._create_artifacts(), name="fluxion.artifacts")
        self._last_report = time.monotonic()

    async def _create_artifacts(self) -> None:
        try:
            self.table_id = await acreate_table_artifact(
                table=[],
                key=names.artifact_key(self.pipeline_id, "metrics"),
                description=f"Per-stage and per-sink metrics of `{self.pipeline_id}`, updated in place.",
            )
            if self.mode is RunMode.DRAIN:
                self.progress_id = await acreate_progress_artifact(
                    progress=0.0,
                    key=names.artifact_key(self.pipeline_id, "progress"),
                    description=f"Share of the backlog seen at start that `{self.pipeline_id}` has consumed.",
                )
        except Exception as exc:  # the pipeline runs on without its artifacts
            self.logger.warning(self.scrubber.text(f"could not create the metrics artifacts: {exc}"))

    async def on_metrics(self, snapshot: dict[str, Any]) -> None:
        self.latest = snapshot
        if time.monotonic() - self._last_report >= self.interval * 0.9:
            await self._report()

    async def on_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_checkpoint = checkpoint
        self._checkpoints_since += 1
        if time.monotonic() - self._last_checkpoint_event >= self.interval:
            self._flush_checkpoint()

    async def on_dead_letter(self, context: dict[str, Any]) -> None:
        self._dead_letters.append(context)
        if time.monotonic() - self._last_dead_letter_event >= self.interval:
            self._flush_dead_letters()

    async def on_stop(self, snapshot: dict[str, Any], error: BaseException | None) -> None:
        if self._artifacts is not None:
            await self._artifacts
        progress = self.latest.get("progress")  # only the periodic snapshot carries the source's progress
        self.latest = {**snapshot, "progress": progress} if progress is not None else snapshot
        await self._report(final=True)
        payload: dict[str, Any] = {"metrics": self._metrics(), "reason": "error" if error else "ended"}
        if error is not None:
            payload["error"] = {"type": type(error).__name__, "message": self.scrubber.text(str(error))[:500]}
        self._emit(names.EVENT_STOPPED, payload)

    # --------------------------------------------------------------- reports
    async def _report(self, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_report, 1e-6)
        self._last_report = now
        m = self.latest
        if not m:
            return
        out = int(m.get("documentsOut", 0))
        rate = (out - self._last_out) / elapsed
        self._last_out = out
        self.logger.info(self.scrubber.text(self._summary(m, rate, final)))
        if not final:
            self._emit(names.EVENT_HEARTBEAT, {"metrics": self._metrics(), "intervalRate": round(rate, 1)})
        self._flush_checkpoint()
        self._flush_dead_letters()
        await self._update_artifacts(m)

    def _summary(self, m: dict[str, Any], rate: float, final: bool) -> str:
        age = m.get("checkpointAgeSeconds")
        lag = m.get("lag")
        return (
            f"{'final: ' if final else ''}{self.pipeline_id}: {m.get('documentsIn', 0):,} in → "
            f"{m.get('documentsOut', 0):,} out, {rate:,.0f} docs/s, "
            f"lag {'n/a' if lag is None else f'{lag:,.0f}'}, retries {m.get('retries', 0)}, "
            f"dead-lettered {m.get('deadLettered', 0)}, "
            f"checkpoint age {'none yet' if age is None else f'{age:.1f} s'}"
        )

    def _metrics(self) -> dict[str, Any]:
        return {key: self.latest.get(key) for key in _HEARTBEAT_KEYS}

    async def _update_artifacts(self, m: dict[str, Any]) -> None:
        if self._artifacts is not None:
            await self._artifacts
        if self.table_id is not None:
            async with get_client() as client:
                await client.update_artifact(self.table_id, ArtifactUpdate(data=_table(m)))
        progress = m.get("progress")
        if self.progress_id is not None and progress is not None:
            await aupdate_progress_artifact(self.progress_id, round(100.0 * float(progress["fraction"]), 1))

    def _flush_checkpoint(self) -> None:
        if self._pending_checkpoint is None:
            return
        checkpoint, count = self._pending_checkpoint, self._checkpoints_since
        self._pending_checkpoint, self._checkpoints_since = None, 0
        self._last_checkpoint_event = time.monotonic()
        self._emit(
            names.EVENT_CHECKPOINTED,
            {
                "generation": checkpoint.get("generation"),
                "positions": checkpoint.get("positions"),
                "committedAt": checkpoint.get("committedAt"),
                "documents": checkpoint.get("documents"),
                "commitsSinceLastEvent": count,
            },
        )

    def _flush_dead_letters(self) -> None:
        if not self._dead_letters:
            return
        batch, self._dead_letters = self._dead_letters, []
        self._last_dead_letter_event = time.monotonic()
        last = batch[-1]
        self._emit(
            names.EVENT_DEAD_LETTERED,
            {
                "count": len(batch),
                "last": {k: last.get(k) for k in ("step", "where", "error", "positions", "documentCount")},
            },
        )

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        emit_event(
            event=event,
            resource=dict(self.resource),
            related=list(self.related),
            payload=self.scrubber.tree(payload),
        )


def _table(m: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "kind": "stage",
            "name": s["name"],
            "path": s["path"],
            "in": s["inputDocs"],
            "out": s["outputDocs"],
            "calls": s["invocations"],
            "ms": s["durationMs"],
            "errors": s["errors"],
        }
        for s in m.get("stages", [])
    ]
    rows += [
        {
            "kind": "sink",
            "name": s["type"],
            "path": s["path"],
            "in": s["documents"],
            "out": s["documents"],
            "calls": s["writes"],
            "ms": s["durationMs"],
            "errors": s["errors"],
        }
        for s in m.get("sinks", [])
    ]
    return rows


__all__ = ["PrefectObserver", "Scrubber"]
