"""File-lock based ownership store: load balancing between runs on one machine.

One JSON file per (pipeline, namespace, hub, consumer group) holds the claims
and checkpoints. Every operation takes an exclusive ``flock`` on a sibling
lock file, reads, changes and atomically replaces the JSON file, so the
etag compare-and-swap holds between processes. ``flock`` is not reliable on
network file systems: use PostgreSQL or Redis across machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from fluxion_connect_eventhub.ownership.base import (
    Group,
    OwnershipStore,
    checkpoint_record,
    new_etag,
    ownership_record,
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

State = dict[str, dict[str, dict[str, Any]]]


class FileOwnershipStore(OwnershipStore):
    kind = "file"

    def __init__(self, directory: str | os.PathLike[str], scope: str) -> None:
        super().__init__(scope)
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"file:{self.directory}"

    def path_for(self, group: Group) -> Path:
        name = "-".join(
            _UNSAFE.sub("_", p) for p in (self.scope, group.namespace, group.hub, group.consumer_group)
        )
        return self.directory / f"{name}.ownership.json"

    async def list_ownership(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        state = await asyncio.to_thread(self._locked_read, group)
        return [
            ownership_record(group, pid, r["owner_id"], r["etag"], r["last_modified_time"])
            for pid, r in state["ownership"].items()
        ]

    async def claim_ownership(
        self, ownership_list: Iterable[dict[str, Any]], **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        by_group: dict[Group, list[dict[str, Any]]] = {}
        for item in ownership_list:
            by_group.setdefault(Group.of(item), []).append(item)
        claimed: list[dict[str, Any]] = []
        for group, items in by_group.items():
            claimed.extend(await asyncio.to_thread(self._claim, group, items))
        return claimed

    async def update_checkpoint(self, checkpoint: dict[str, Any], **kwargs: Any) -> None:
        await asyncio.to_thread(self._update_checkpoint, Group.of(checkpoint), checkpoint)

    async def list_checkpoints(
        self, fully_qualified_namespace: str, eventhub_name: str, consumer_group: str, **kwargs: Any
    ) -> Iterable[dict[str, Any]]:
        group = Group(fully_qualified_namespace, eventhub_name, consumer_group)
        state = await asyncio.to_thread(self._locked_read, group)
        return [
            checkpoint_record(group, pid, int(c["sequence_number"]), str(c["offset"]))
            for pid, c in state["checkpoints"].items()
        ]

    # ------------------------------------------------------------ under the lock
    def _claim(self, group: Group, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._lock(group):
            state = self._read(group)
            now = time.time()
            claimed = []
            for item in items:
                pid = str(item["partition_id"])
                current = state["ownership"].get(pid)
                expected = item.get("etag")
                if (current is None and expected) or (current is not None and current["etag"] != expected):
                    continue
                owner, etag = str(item.get("owner_id") or ""), new_etag()
                state["ownership"][pid] = {"owner_id": owner, "etag": etag, "last_modified_time": now}
                claimed.append(ownership_record(group, pid, owner, etag, now))
            if claimed:
                self._write(group, state)
            return claimed

    def _update_checkpoint(self, group: Group, checkpoint: dict[str, Any]) -> None:
        with self._lock(group):
            state = self._read(group)
            pid = str(checkpoint["partition_id"])
            current = state["checkpoints"].get(pid)
            sequence = int(checkpoint["sequence_number"])
            if current is not None and int(current["sequence_number"]) >= sequence:
                return
            state["checkpoints"][pid] = {"sequence_number": sequence, "offset": str(checkpoint["offset"])}
            self._write(group, state)

    def _locked_read(self, group: Group) -> State:
        with self._lock(group):
            return self._read(group)

    def _read(self, group: Group) -> State:
        try:
            data = orjson.loads(self.path_for(group).read_bytes())
        except FileNotFoundError:
            data = {}
        return {
            "ownership": dict(data.get("ownership") or {}),
            "checkpoints": dict(data.get("checkpoints") or {}),
        }

    def _write(self, group: Group, state: State) -> None:
        target = self.path_for(group)
        temporary = target.with_suffix(f".tmp{os.getpid()}")
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps(state, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    @contextlib.contextmanager
    def _lock(self, group: Group) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.path_for(group).with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
