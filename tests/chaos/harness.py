"""The crash harness: run a pipeline as ``fluxion run``, SIGKILL it at seeded random moments, verify.

A pair (file→file, Kafka→HTTP, ...) is a :class:`CrashTarget`: it writes the
manifest, feeds new input before each run, counts deliveries cheaply (to
see a run make progress), reads the checkpoint file, and finally lists every
delivery as a :class:`Delivery` (which run delivered it, from which source
partition, up to which source position). The harness owns everything else:

1. For each run: feed input, start ``python -m fluxion_flows run MANIFEST -q``,
   pick the kill moment from a seeded generator (mostly a random delay after
   the run's first delivery, sometimes a random delay after start-up, which
   lands in start-up, claim or the first batch), SIGKILL, and read the
   checkpoint the next run will start from.
2. After ``kills`` kills, one last run to the end (drain) must exit 0.
3. Verify: every input record was delivered (nothing lost); a record
   delivered again by run *r* was not covered by the checkpoint run *r*
   started from (every duplicate lies after the last checkpoint before the
   kill); no run repeats a record it already delivered itself; checkpoints
   never move backwards.

Adding a pair is one more ``CrashTarget`` and one more parameter.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[2]
RUN_VARIABLE = "FLUXION_CHAOS_RUN"
"""Environment variable with the run number, for sinks that tag deliveries (``${FLUXION_CHAOS_RUN}``)."""


@dataclass(frozen=True)
class Delivery:
    """One document as the target received it."""

    run: int
    key: str
    """The source partition, spelled as in the checkpoint's positions (file path, ``topic:partition``)."""
    after: int
    """The source position just after this record: a checkpoint covers it iff ``after <= positions[key]``."""

    @property
    def origin(self) -> tuple[str, int]:
        return (self.key, self.after)


class CrashTarget(Protocol):
    """One source→sink pair under test."""

    name: str
    manifest: Path
    final_args: tuple[str, ...]
    """Extra ``fluxion run`` arguments for the last run, which must end by itself (e.g. ``--mode drain``)."""

    def feed(self, count: int) -> None:
        """Add ``count`` new input records."""

    def delivered(self) -> int:
        """Documents delivered so far (cheap: called in a polling loop)."""

    def checkpoint(self) -> dict[str, int]:
        """The positions in the checkpoint file now ({} before the first commit)."""

    def end_of_run(self, run: int) -> None:
        """Called once run ``run``'s process is dead (targets that segment by order mark the boundary)."""

    def deliveries(self) -> list[Delivery]:
        """Every delivery, in delivery order within each run."""

    def expected(self) -> set[tuple[str, int]]:
        """The origin of every input record fed so far."""


@dataclass
class KillRecord:
    run: int
    moment: str
    """``busy``: a delay after the run's first delivery; ``early``: a delay after the process started."""
    delay: float
    killed: bool
    """False when the run ended by itself before its kill moment."""
    delivered_at_kill: int
    checkpoint: dict[str, int]

    def describe(self) -> str:
        what = "SIGKILL" if self.killed else "ended itself"
        return (
            f"run {self.run}: {self.moment} +{self.delay:.3f}s {what} at {self.delivered_at_kill} delivered"
        )


@dataclass
class CrashReport:
    target: str
    seed: int
    runs: list[KillRecord]
    records: int = 0
    deliveries: int = 0
    duplicates_per_run: dict[int, int] = field(default_factory=dict)
    final_run_seconds: float = 0.0

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.runs)

    @property
    def duplicates(self) -> int:
        return sum(self.duplicates_per_run.values())

    def summary(self) -> str:
        per_kill = [self.duplicates_per_run.get(r.run + 1, 0) for r in self.runs if r.killed]
        return (
            f"crash matrix {self.target}: seed={self.seed} kills={self.kills} records={self.records} "
            f"deliveries={self.deliveries} duplicates={self.duplicates} "
            f"(per kill: max {max(per_kill, default=0)}, mean {sum(per_kill) / max(1, len(per_kill)):.1f}) "
            f"final run {self.final_run_seconds:.1f}s\n  " + "\n  ".join(r.describe() for r in self.runs)
        )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def spawn(
    manifest: Path, run: int, env: dict[str, str], log: Path, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        handle.write(f"\n===== run {run} =====\n".encode())
    output = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "fluxion_flows", "run", str(manifest), "-q", *extra],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**env, RUN_VARIABLE: str(run)},
        )
    finally:
        output.close()


@dataclass
class CrashHarness:
    target: CrashTarget
    env: dict[str, str]
    log: Path
    seed: int
    kills: int = 20
    feed_per_run: int = 2000
    busy_delay: tuple[float, float] = (0.0, 0.4)
    early_share: float = 0.2
    early_delay: tuple[float, float] = (0.2, 2.5)
    progress_timeout: float = 90.0
    final_timeout: float = 180.0

    def run(self) -> CrashReport:
        rng = random.Random(self.seed)
        report = CrashReport(self.target.name, self.seed, [])
        print(f"crash matrix {self.target.name}: seed {self.seed}", flush=True)
        run = 0
        while report.kills < self.kills:
            if run >= 3 * self.kills:
                raise AssertionError(f"runs keep ending before their kill moment:\n{report.summary()}")
            report.runs.append(self._one(run, rng))
            print(report.runs[-1].describe(), flush=True)
            run += 1
        report.final_run_seconds = self._final(run)
        verify(self.target, report)
        print(report.summary(), flush=True)
        return report

    def _one(self, run: int, rng: random.Random) -> KillRecord:
        self.target.feed(self.feed_per_run)
        early = rng.random() < self.early_share
        delay = rng.uniform(*self.early_delay) if early else rng.uniform(*self.busy_delay)
        before = self.target.delivered()
        process = spawn(self.target.manifest, run, self.env, self.log)
        try:
            if not early:
                wait_until(
                    lambda: self.target.delivered() > before or process.poll() is not None,
                    self.progress_timeout,
                    f"run {run} to deliver (log: {self.log})",
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=delay)  # the random kill moment: this wait is the thing under test
        finally:
            killed = process.poll() is None
            if killed:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        if not killed and process.returncode != 0:
            raise AssertionError(f"run {run} failed with exit {process.returncode}; log: {self.log}")
        self.target.end_of_run(run)
        return KillRecord(
            run,
            "early" if early else "busy",
            delay,
            killed,
            self.target.delivered(),
            self.target.checkpoint(),
        )

    def _final(self, run: int) -> float:
        started = time.monotonic()
        process = spawn(self.target.manifest, run, self.env, self.log, self.target.final_args)
        try:
            code = process.wait(timeout=self.final_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(
                f"the final run did not finish within {self.final_timeout}s; log: {self.log}"
            ) from None
        assert code == 0, f"the final run exited {code}; log tail:\n{self.log.read_text()[-3000:]}"
        self.target.end_of_run(run)
        return time.monotonic() - started


def verify(target: CrashTarget, report: CrashReport) -> None:
    """The crash properties; fills the report's counts, raises AssertionError naming the first violations."""
    deliveries = target.deliveries()
    expected = target.expected()
    delivered = {d.origin for d in deliveries}
    report.records, report.deliveries = len(expected), len(deliveries)
    missing = sorted(expected - delivered)
    assert not missing, f"{len(missing)} records lost, e.g. {missing[:5]}\n{report.summary()}"
    unknown = sorted(delivered - expected)
    assert not unknown, f"{len(unknown)} deliveries of records never fed, e.g. {unknown[:5]}"

    starts: dict[int, dict[str, int]] = {0: {}} | {r.run + 1: r.checkpoint for r in report.runs}
    by_run: dict[int, list[Delivery]] = {}
    for d in deliveries:
        by_run.setdefault(d.run, []).append(d)
    earlier: set[tuple[str, int]] = set()
    problems: list[str] = []
    duplicates: Counter[int] = Counter()
    for run in sorted(by_run):
        start = starts.get(run, {})
        mine: set[tuple[str, int]] = set()
        for d in by_run[run]:
            if d.origin in mine:
                problems.append(f"run {run} delivered {d.origin} twice itself (no kill in between)")
            elif d.origin in earlier:
                duplicates[run] += 1
                if d.after <= start.get(d.key, 0):
                    problems.append(
                        f"run {run} re-delivered {d.origin} though the checkpoint it started from "
                        f"({d.key}={start.get(d.key)}) covered it"
                    )
            mine.add(d.origin)
        earlier |= mine
    report.duplicates_per_run = dict(duplicates)
    previous: dict[str, int] = {}
    for record in report.runs:
        for key, position in previous.items():
            if record.checkpoint.get(key, 0) < position:
                problems.append(
                    f"checkpoint moved back after run {record.run}: {key} {position} -> "
                    f"{record.checkpoint.get(key)}"
                )
        previous = record.checkpoint
    assert not problems, f"{len(problems)} violations:\n" + "\n".join(problems[:10]) + f"\n{report.summary()}"
