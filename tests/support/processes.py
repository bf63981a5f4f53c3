"""Process-tree helpers (Linux ``/proc``): find the process a Prefect runner or worker started for a flow run.

Prefect starts each flow run in a child process (in a new session) whose
environment carries ``PREFECT__FLOW_RUN_ID``; tests find it there to sample
its memory or to kill it together with its worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID


def rss(pid: int) -> int:
    """``VmRSS`` of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def descendants(pid: int) -> Iterator[int]:
    """Every live descendant of ``pid`` (depth first), skipping processes that exit meanwhile."""
    try:
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return
    for child in children:
        yield child
        yield from descendants(child)


def flow_run_process(parent: int, flow_run_id: UUID | str) -> int | None:
    """The descendant of ``parent`` executing ``flow_run_id`` (it carries the id in its environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for pid in descendants(parent):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment:
            return pid
    return None
