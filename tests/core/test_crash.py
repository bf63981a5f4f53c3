"""Crash test: file → file under SIGKILL at random moments loses nothing.

The pipeline runs as a real ``fluxion run`` subprocess with the file
checkpoint store. It is killed 10 times, each time once its output has grown
past a seeded random point, and restarted. At the end every input record is
in the output at least once, and every record delivered twice was delivered
again only after the last checkpoint that preceded the kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

RECORDS = 30_000
KILLS = 10
SEED = 20261130


def write_manifest(tmp: Path) -> Path:
    manifest = tmp / "crash.yaml"
    manifest.write_text(
        f"""
id: crash
operationDefs:
  copy:
    execution:
      type: streaming
      source: {{type: file, path: {tmp / "in.jsonl"}}}
      process: {{type: pipeline, stages: [{{$set: {{copied: true}}}}]}}
      sink: {{type: file, path: {tmp / "out.jsonl"}}}
runtime: {{microBatchSize: 50, maxBatchWait: PT0.01S}}
checkpoint: {{store: file, directory: {tmp / "ck"}, interval: PT0.02S}}
"""
    )
    return manifest


def output_lines(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [line for line in path.read_bytes().split(b"\n") if line.endswith(b"}")]


def checkpoint_offset(tmp: Path, source: Path) -> int:
    file = tmp / "ck" / "crash.copy.checkpoint.json"
    if not file.exists():
        return 0
    return int(orjson.loads(file.read_bytes())["positions"].get(str(source), 0))


def wait_until(condition: object, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"id": i, "pad": "x" * 40}) + b"\n" for i in range(RECORDS)))
    manifest = write_manifest(tmp_path)
    out = tmp_path / "out.jsonl"
    rng = random.Random(SEED)
    command = [sys.executable, "-m", "fluxion_flows", "run", str(manifest), "-q"]
    kills: list[tuple[int, int]] = []  # (output lines at the kill, checkpointed offset at the kill)
    for _ in range(KILLS):
        before = len(output_lines(out))
        target = before + rng.randint(200, 2500)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda t=target, p=process: len(output_lines(out)) >= t or p.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        kills.append((len(output_lines(out)), checkpoint_offset(tmp_path, source)))
    final = subprocess.run(command, capture_output=True, timeout=120)
    assert final.returncode == 0, final.stderr.decode()

    lines = output_lines(out)
    documents = [orjson.loads(line) for line in lines]
    ids = [d["id"] for d in documents]
    assert set(ids) == set(range(RECORDS)), "records lost"
    assert all(d["copied"] for d in documents)
    # Each segment (output written by one run) may repeat records of earlier segments only
    # beyond the checkpoint that was committed when the previous run was killed.
    seen: set[int] = set()
    start = 0
    boundaries = [*kills, (len(lines), 0)]
    previous_checkpoint = 0
    for end, checkpoint_at_kill in boundaries:
        for document in documents[start:end]:
            if document["id"] in seen:
                assert document["_meta"]["offset"] > previous_checkpoint, (
                    f"record {document['id']} re-delivered though checkpoint {previous_checkpoint} covered it"
                )
            seen.add(document["id"])
        start, previous_checkpoint = end, checkpoint_at_kill
    duplicates = len(ids) - len(set(ids))
    print(f"crash test: {KILLS} kills (seed {SEED}), {duplicates} duplicates, {RECORDS} records")
    assert os.path.getsize(out) > 0
