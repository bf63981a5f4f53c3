"""A consumer-group member in its own process, for kill -9 tests.

Usage: python -m tests.kafka.member BOOTSTRAP TOPIC GROUP
Prints one JSON line per event: {"assigned": [...]} when its assignment
changes, {"batch": [[partition, offset], ...], "positions": {...}} for each
batch *before* committing it (so a printed batch may be uncommitted when the
process is killed, never the other way round).
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from tests.kafka.util import source


async def main(bootstrap: str, topic: str, group: str) -> None:
    src = source(bootstrap, topic, groupId=group, pipeline_id="member")
    await src.start()
    seen: set[str] = set()
    while True:
        batch = await src.next_batch(200, 0.25)
        if batch is None:
            return
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in src.assignment)
        if set(assigned) != seen:
            seen = set(assigned)
            print(orjson.dumps({"assigned": assigned}).decode(), flush=True)
        if batch.documents:
            records = [[d["_meta"]["partition"], d["_meta"]["offset"]] for d in batch.documents]
            print(orjson.dumps({"batch": records, "positions": batch.positions}).decode(), flush=True)
            await src.on_durable(batch.positions)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
