"""The "heartbeat stopped" automation: alert when a running pipeline goes silent.

A proactive trigger per pipeline resource (``for_each`` on
``prefect.resource.id``): once a pipeline has emitted
``fluxion.pipeline.started`` or ``fluxion.pipeline.heartbeat``, Prefect expects
another heartbeat (or ``fluxion.pipeline.stopped``, a clean end) within
``within`` seconds; if none comes, the automation fires. A pipeline that stops
cleanly emits ``stopped`` and so never alerts; a killed process, a hung event
loop or a lost worker does.

``within`` should be a few heartbeat intervals (``runtime.metricsInterval``,
default 5 s): the default of 120 s tolerates short API hiccups. The action is
``SendNotification`` to a notification block when one is named, else
``DoNothing`` (the firing is still recorded as a ``prefect.automation.triggered``
event and shown in the UI's automations and event feed).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from prefect.automations import Automation
from prefect.events.actions import DoNothing, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from fluxion_flows.prefect import names

DEFAULT_NAME = "fluxion: pipeline heartbeat stopped"


def heartbeat_trigger(pipeline_id: str | None = None, within: float = 120.0) -> EventTrigger:
    """``pipeline_id`` None watches every Fluxion pipeline in the workspace."""
    match = names.resource_id(pipeline_id) if pipeline_id else f"{names.EVENT_PREFIX}.pipeline.*"
    return EventTrigger(
        match={"prefect.resource.id": match},
        after={names.EVENT_STARTED, names.EVENT_HEARTBEAT},
        expect={names.EVENT_HEARTBEAT, names.EVENT_STOPPED},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=dt.timedelta(seconds=within),
    )


async def create_heartbeat_automation(
    *,
    name: str = DEFAULT_NAME,
    pipeline_id: str | None = None,
    within: float = 120.0,
    notification_block_id: UUID | None = None,
) -> Automation:
    action: Any = (
        SendNotification(
            block_document_id=notification_block_id,
            subject="Fluxion pipeline {{ event.resource.name }} stopped sending heartbeats",
            body=(
                "No fluxion.pipeline.heartbeat from {{ event.resource.id }} within "
                f"{within:.0f} s. Check its flow run and worker."
            ),
        )
        if notification_block_id
        else DoNothing()
    )
    automation = Automation(
        name=name,
        description="Fires when a Fluxion pipeline that was running stops emitting heartbeats.",
        trigger=heartbeat_trigger(pipeline_id, within),
        actions=[action],
    )
    created: Automation = await automation.acreate()
    return created


__all__ = ["DEFAULT_NAME", "create_heartbeat_automation", "heartbeat_trigger"]
