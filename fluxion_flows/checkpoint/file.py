"""Local-file checkpoint store: the embedded default.

Each pipeline's checkpoint is one JSON file replaced atomically (write a
temporary file, fsync it, ``os.replace``, fsync the directory), so a
``kill -9`` at any instant leaves either the old or the new checkpoint,
never a torn one. Claims and saves hold an ``flock`` on a sibling lock file,
which makes the generation fence hold across processes on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

import orjson

from fluxion_flows.checkpoint.store import Checkpoint, CheckpointStore, check_generation, claimed

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class FileCheckpointStore(CheckpointStore):
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, pipeline_id: str) -> Path:
        return self.directory / f"{_UNSAFE.sub('_', pipeline_id)}.checkpoint.json"

    async def load(self, pipeline_id: str) -> Checkpoint | None:
        return await asyncio.to_thread(self._read, pipeline_id)

    async def claim(self, pipeline_id: str, *, shared: bool = False) -> Checkpoint:
        return await asyncio.to_thread(self._claim, pipeline_id, shared)

    async def save(self, checkpoint: Checkpoint) -> None:
        await asyncio.to_thread(self._save, checkpoint)

    def _claim(self, pipeline_id: str, shared: bool) -> Checkpoint:
        with self._locked(pipeline_id):
            record = claimed(self._read(pipeline_id), pipeline_id, shared)
            self._write(record)
            return record

    def _save(self, checkpoint: Checkpoint) -> None:
        with self._locked(checkpoint.pipeline_id):
            stored = self._read(checkpoint.pipeline_id)
            check_generation(checkpoint.pipeline_id, checkpoint.generation, stored)
            self._write(stored.merged_with(checkpoint) if stored else checkpoint)

    def _read(self, pipeline_id: str) -> Checkpoint | None:
        try:
            data = self.path_for(pipeline_id).read_bytes()
        except FileNotFoundError:
            return None
        return Checkpoint.from_dict(orjson.loads(data))

    def _write(self, checkpoint: Checkpoint) -> None:
        target = self.path_for(checkpoint.pipeline_id)
        temporary = target.with_suffix(f".tmp{os.getpid()}")
        with open(temporary, "wb") as handle:
            handle.write(orjson.dumps(checkpoint.to_dict(), option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    @contextlib.contextmanager
    def _locked(self, pipeline_id: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.path_for(pipeline_id).with_suffix(".lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
