"""Run every ``bench/*.py`` script and write ``bench/REPORT.md`` (``make bench``).

Each script runs in its own subprocess (own process group) with the
project's interpreter and starts the peers it needs itself: ``kafka.py`` and
``latency.py`` a Tansu broker, ``mongo.py`` an nx-27017 server,
``eventhub.py`` the AMQP emulator, ``http_sink.py`` a uvicorn server,
``latency.py`` an HTTP receiver and a Prefect API, ``prefect_overhead.py``
Prefect's test API. Nothing has to run beforehand.

A script's result lines are the JSON objects with a ``workload`` key it
prints (DESIGN.md: ``workload``, ``rate``, ``baseline``, ``baseline_rate``,
``ratio``, ``goal``; latency lines add ``p50_ms``/``p99_ms``, restart lines
``median_ms``/``max_ms``). Its other output is echoed as progress and, with
its stderr, kept in ``out/bench/<script>.log``. A script that exits non-zero,
prints no result line or runs past ``--timeout`` (then its process group gets
SIGINT, and SIGKILL 30 s later) is recorded as failed in the report, the
remaining scripts still run, and this command exits 1 at the end.

Scripts run at their default sizes unless ``--quick`` is given: then each
gets its own reduced-size flags (``QUICK_FLAGS``; a flag the script no longer
mentions is left out and the report says so) and the report is marked quick.

    .venv/bin/python bench/report.py [--quick] [--only NAME ...] [--timeout SECONDS] [--output PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOGS = ROOT / "out" / "bench"
HEARTBEAT = 60.0  # seconds of silence before a "still running" line
GRACE = 30.0  # seconds between SIGINT and SIGKILL when stopping a script

QUICK_FLAGS: dict[str, dict[str, str | None]] = {
    # reduced sizes, each flag taken from the script's own argument parser (None: a switch)
    "stages": {"--quick": None},
    "executor": {"--documents": "200000", "--rounds": "3"},
    "http_sink": {"--docs": "50000", "--rounds": "3"},
    "kafka": {"--docs": "100000", "--rounds": "1"},
    "mongo": {"--docs": "10000", "--events": "5000", "--rounds": "3"},
    "eventhub": {"--events": "5000", "--rounds": "1"},
    "latency": {"--seconds": "5", "--restarts": "1"},
    "prefect_overhead": {"--documents": "200000", "--rounds": "3"},
}


@dataclass
class ScriptRun:
    name: str
    flags: list[str]
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    code: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    stderr_tail: list[str] = field(default_factory=list)
    log: Path | None = None


# -- running ---------------------------------------------------------------------------------------------


def quick_flags(path: Path) -> tuple[list[str], list[str]]:
    """The script's reduced-size flags, minus any its source no longer mentions (renamed, removed)."""
    source = path.read_text()
    flags: list[str] = []
    dropped: list[str] = []
    for flag, value in QUICK_FLAGS.get(path.stem, {}).items():
        if f'"{flag}"' not in source and f"'{flag}'" not in source:
            dropped.append(flag)
            continue
        flags += [flag] if value is None else [flag, value]
    return flags, dropped


def result_lines(stdout: str) -> list[dict[str, Any]]:
    """Every JSON object line with a ``workload`` key, in order (other lines are progress output)."""
    found: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "workload" in value:
            found.append(value)
    return found


def echo(stream: IO[str], collected: list[str], last: list[float]) -> None:
    """Reader thread: keep and echo each line of the script's stdout as it comes (progress)."""
    for line in stream:
        collected.append(line)
        last[0] = time.monotonic()
        text = line.rstrip()
        if text and not text.startswith("{"):
            print(f"   | {text}", flush=True)


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGINT to the script's process group (its ``finally`` blocks stop its peers), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, GRACE), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def run_script(path: Path, flags: list[str], timeout: float, number: str) -> ScriptRun:
    run = ScriptRun(path.stem, flags, log=LOGS / f"{path.stem}.log")
    print(f"[{number}] bench/{path.name} {' '.join(flags) or '(default sizes)'}", flush=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    stderr_path = LOGS / f"{path.stem}.stderr"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    stdout: list[str] = []
    started = time.monotonic()
    last = [started]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(path), *flags],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            text=True, start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        reader = threading.Thread(target=echo, args=(process.stdout, stdout, last), daemon=True)
        reader.start()
        try:
            run.error = wait(process, started, timeout, last)
        except KeyboardInterrupt:
            stop_group(process)
            run.error = "interrupted (Ctrl-C)"
            raise
        finally:
            reap_leftovers(process)
            reader.join(timeout=10)
            run.seconds = time.monotonic() - started
            run.code = process.returncode
            finish(run, "".join(stdout), stderr_path)
    return run


def reap_leftovers(process: subprocess.Popen[str]) -> None:
    """Kill what the script left running in its process group (a peer its cleanup missed)."""
    if process.poll() is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait(process: subprocess.Popen[str], started: float, timeout: float, last: list[float]) -> str:
    """Wait for the script, printing a line after each minute of silence; '' or the timeout error."""
    while True:
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            stop_group(process)
            return f"timed out after {timeout:.0f} s"
        try:
            process.wait(timeout=min(5.0, timeout - elapsed + 0.1))
            return ""
        except subprocess.TimeoutExpired:
            if time.monotonic() - last[0] > HEARTBEAT:
                print(f"   … still running ({time.monotonic() - started:.0f} s)", flush=True)
                last[0] = time.monotonic()


def finish(run: ScriptRun, stdout: str, stderr_path: Path) -> None:
    """Parse the results, decide failure, write the log (stdout then stderr) and print the outcome."""
    stderr = stderr_path.read_text(errors="replace")
    assert run.log is not None
    run.log.write_text(stdout + "\n--- stderr ---\n" + stderr)
    stderr_path.unlink(missing_ok=True)
    run.results = result_lines(stdout)
    if not run.error and run.code != 0:
        run.error = f"exit {run.code}"
    elif not run.error and not run.results:
        run.error = "no result line printed"
    if run.error:
        tail = (stderr.strip() or stdout.strip()).splitlines()
        run.stderr_tail = tail[-15:]
        print(f"   FAILED after {run.seconds:.0f} s: {run.error} (log: {relative(run.log)})", flush=True)
        for line in run.stderr_tail[-5:]:
            print(f"   ! {line}", flush=True)
    else:
        print(f"   ok in {run.seconds:.0f} s", flush=True)
    for result in run.results:
        print("   " + json.dumps(result), flush=True)


# -- the report ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load": load_average(),
        "commit": git_commit(),
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "n/a"
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def git_commit() -> str:
    """The commit measured, with ``+changes`` when the working tree differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" +changes" if dirty else "")


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def verdict(result: dict[str, Any]) -> str:
    ratio, goal = result.get("ratio"), result.get("goal")
    if not isinstance(ratio, int | float) or not isinstance(goal, int | float):
        return "n/a"
    return "met" if ratio >= goal else "**missed**"


def is_latency(result: dict[str, Any]) -> bool:
    return any(key in result for key in ("p50_ms", "median_ms"))


def render(runs: list[ScriptRun], info: dict[str, Any], quick: bool, ended: str, load_end: str) -> str:
    results = [r if not run.error else flagged(r) for run in runs for r in run.results]
    lines = header(info, quick, ended, load_end)
    lines += throughput_table([r for r in results if not is_latency(r)])
    lines += latency_table([r for r in results if is_latency(r)])
    lines += scripts_table(runs)
    lines += failures(runs)
    lines += extra_fields(results)
    return "\n".join(lines) + "\n"


def flagged(result: dict[str, Any]) -> dict[str, Any]:
    """A result line from a script that then failed: shown, but marked."""
    return {**result, "workload": f"{result.get('workload')} (script failed)"}


def header(info: dict[str, Any], quick: bool, ended: str, load_end: str) -> list[str]:
    lines = [
        "# Benchmark report",
        "",
        f"Generated by `make bench` (`bench/report.py{' --quick' if quick else ''}`), "
        f"{info['started']} to {ended}, commit {info['commit']}.",
        "",
        f"- Machine: {info['cores']} cores ({info['cpu']}), {info['platform']}",
        f"- Python: {info['implementation']} {info['python']}",
        f"- Load average (1, 5, 15 min): {info['load']} at start, {load_end} at the end "
        "(other work on the machine slows both sides of a ratio alike, not the absolute rates)",
        "- Each ratio is measured against a baseline run in the same script run, interleaved "
        "(A B A B) with medians; each script's docstring says what its baseline does.",
    ]
    if quick:
        lines.append(
            "- **Quick mode**: reduced sizes and rounds (flags in the Scripts table); "
            "figures are noisier than a full run's."
        )
    return lines


def throughput_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Throughput",
        "",
        "| workload | rate (docs/s) | baseline | baseline rate | ratio | goal | goal met |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.get('workload')} | {_number(r.get('rate'))} | {r.get('baseline') or '-'} | "
            f"{_number(r.get('baseline_rate'))} | {_number(r.get('ratio'), 2)} | "
            f"{_number(r.get('goal'), 2)} | {verdict(r)} |"
        )
    if not results:
        lines.append("| (no results) | | | | | | |")
    return lines


def latency_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Latency and recovery",
        "",
        "End to end from the source timestamp to arrival at the sink, and from restarting a SIGKILLed "
        "pipeline to its first delivery (`bench/latency.py`).",
        "",
        "| measurement | figure | detail |",
        "|---|---|---|",
    ]
    for r in results:
        api = f"Prefect API: {r['prefect_api']}" if r.get("prefect_api") else ""
        if "p50_ms" in r:
            figure = f"p50 {_number(r.get('p50_ms'), 1)} ms, p99 {_number(r.get('p99_ms'), 1)} ms"
            detail = (
                f"{_number(r.get('documents'))} documents; delivered {_number(r.get('rate'))} docs/s "
                f"of {_number(r.get('baseline_rate'))} offered; {api}"
            )
        else:
            figure = f"median {_number(r.get('median_ms'), 0)} ms, max {_number(r.get('max_ms'), 0)} ms"
            detail = f"{r.get('restarts')} restart(s), seconds {r.get('seconds')}; {api}"
        lines.append(f"| {r.get('workload')} | {figure} | {detail.strip('; ')} |")
    if not results:
        lines.append("| (no results) | | |")
    return lines


def scripts_table(runs: list[ScriptRun]) -> list[str]:
    lines = ["", "## Scripts", "", "| script | flags | seconds | status |", "|---|---|---:|---|"]
    for run in runs:
        count = len(run.results)
        status = f"**failed**: {run.error}" if run.error else f"ok ({count} result line{'s' * (count != 1)})"
        if run.dropped:
            status += f"; quick flags no longer in the script, left out: {' '.join(run.dropped)}"
        flags = " ".join(run.flags) or "(defaults)"
        lines.append(
            f"| `bench/{run.name}.py` | `{flags}` | {run.seconds:.0f} | {status.replace('|', '/')} |"
        )
    return lines


def failures(runs: list[ScriptRun]) -> list[str]:
    failed = [run for run in runs if run.error]
    if not failed:
        return []
    lines = ["", "## Failures", ""]
    for run in failed:
        log = f" (full output: `{relative(run.log)}`)" if run.log else ""
        lines += [f"### `bench/{run.name}.py`: {run.error}{log}", "", "```", *run.stderr_tail, "```", ""]
    return lines[:-1]


_SHOWN = {
    "workload", "rate", "baseline", "baseline_rate", "ratio", "goal", "p50_ms", "p99_ms", "median_ms",
    "max_ms", "documents", "restarts", "seconds", "prefect_api",
}  # fmt: skip


def extra_fields(results: list[dict[str, Any]]) -> list[str]:
    extra = [r for r in results if set(r) - _SHOWN]
    if not extra:
        return []
    lines = ["", "## Extra fields", ""]
    for r in extra:
        fields = {k: v for k, v in r.items() if k not in _SHOWN}
        lines.append(f"- `{r.get('workload')}`: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return lines


# -- main ------------------------------------------------------------------------------------------------


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(
        p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if only:
        unknown = set(only) - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"unknown script(s): {', '.join(sorted(unknown))}")
        found = [p for p in found if p.stem in only]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes (each script's own flags)")
    parser.add_argument("--only", nargs="*", default=None, help="script names (without .py)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per script, seconds (default 1800)")
    parser.add_argument("--output", type=Path, default=BENCH / "REPORT.md")
    args = parser.parse_args()
    info = machine()
    selected = scripts(args.only)
    mode = ", quick mode" if args.quick else ""
    print(f"benchmarks: {len(selected)} script(s){mode}; logs in {relative(LOGS)}", flush=True)
    runs: list[ScriptRun] = []
    interrupted = False
    for index, path in enumerate(selected, 1):
        flags, dropped = quick_flags(path) if args.quick else ([], [])
        try:
            run = run_script(path, flags, args.timeout, f"{index}/{len(selected)}")
        except KeyboardInterrupt:
            runs.append(ScriptRun(path.stem, flags, error="interrupted (Ctrl-C)"))
            interrupted = True
            break
        run.dropped = dropped
        runs.append(run)
    ended = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
    args.output.write_text(render(runs, info, args.quick, ended, load_average()))
    failed = [run.name for run in runs if run.error]
    print(f"wrote {relative(args.output)}: {len(runs) - len(failed)} of {len(runs)} script(s) ok", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
