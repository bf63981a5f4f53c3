"""The real ``fluxion`` command in a subprocess: validate, run, connectors, schema, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.manifest.util import SECRET_VALUE, execution, manifest, writer

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "deployments" / "manifests" / "quickstart.yaml"
_SCRIPT = Path(sys.executable).parent / "fluxion"
FLUXION = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fluxion_flows"]
ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "FLUXION_TEST_SECRET": SECRET_VALUE}


def fluxion(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLUXION, *args], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=60, check=False
    )


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    """Poll a condition until it holds; fail with ``what`` after the deadline."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def checkpoint(directory: Path, pipeline_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((directory / f"{pipeline_id}.checkpoint.json").read_text())
    return document


# ------------------------------------------------------------------ validate
def test_validate_prints_a_summary() -> None:
    result = fluxion("validate", str(QUICKSTART), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "operation paid-orders is valid" in result.stdout
    assert "file → 3 stage(s) → file" in result.stdout
    assert result.stderr == ""


def test_validate_never_prints_secrets(tmp_path: Path) -> None:
    write = writer(tmp_path)
    path = write(
        "m.yaml", manifest(execution(sink={"type": "file", "path": "secret://env/FLUXION_TEST_SECRET"}))
    )
    result = fluxion("validate", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert SECRET_VALUE not in result.stdout + result.stderr


def _conns() -> list[dict[str, Any]]:
    return [
        {"connectionRef": "gen", "config": {"type": "generator"}},
        {"connectionRef": "foreign", "scope": "globex::default", "config": {"type": "generator"}},
    ]


EXEC = "operationDefs.orders.execution"
USER_ERRORS: list[tuple[str, Any, list[str], list[str]]] = [
    ("bad-yaml", "id: x\nop: {a: 1\n", [], ["invalid YAML at line 3, column 1"]),
    (
        "unknown-provider",
        manifest(execution(source={"type": "generater"})),
        [],
        [f"{EXEC}.source.type", "did you mean `generator`?"],
    ),
    (
        "missing-option",
        manifest(execution(sink={"type": "file"})),
        [],
        [f"{EXEC}.sink.path", "missing required option `path`"],
    ),
    (
        "wrong-type",
        manifest(execution(source={"type": "generator", "count": "x"})),
        [],
        [f"{EXEC}.source.count", "expected an integer"],
    ),
    (
        "unknown-option",
        manifest(execution(source={"type": "generator", "sed": 1})),
        [],
        [f"{EXEC}.source.sed", "did you mean `seed`?"],
    ),
    (
        "unresolved-placeholder",
        manifest(execution(sink={"type": "file", "path": "${FLUXION_TEST_SECRET}/{{NOT_SET_HERE}}"})),
        [],
        [f"{EXEC}.sink.path", "unresolved placeholder `{{NOT_SET_HERE}}`"],
    ),
    (
        "unknown-connection-ref",
        manifest(execution(source={"type": "generator", "connectionRef": "gne"})),
        ["--connections", "connections.yaml"],
        [f"{EXEC}.source.connectionRef", "did you mean `gen`?"],
    ),
    (
        "cross-tenant",
        manifest(execution(source={"type": "generator", "connectionRef": "foreign"})),
        ["--connections", "connections.yaml"],
        ["never cross tenants"],
    ),
    (
        "next-on-plain-sink",
        manifest(execution(sink={"type": "memory", "next": {"type": "stdout"}})),
        [],
        [f"{EXEC}.sink.next"],
    ),
    (
        "fanout-path",
        manifest(execution(sink={"type": "memory", "fanout": [{"type": "memory", "nme": 1}]})),
        [],
        [f"{EXEC}.sink.fanout[0].nme", "did you mean `name`?"],
    ),
    (
        "not-streaming",
        {"id": "x", "operationDefs": {"orders": {"execution": {"type": "http"}}}},
        ["--operation", "orders"],
        [f"{EXEC}.type", "not a streaming operation"],
    ),
    (
        "unknown-execution-type",
        manifest(execution(type="stream")),
        [],
        [f"{EXEC}.type", "did you mean `streaming`?"],
    ),
    ("root-typo", manifest(checkpiont={}), [], ["checkpiont", "did you mean `checkpoint`?"]),
    ("execution-typo", manifest(execution(snk={})), [], [f"{EXEC}.snk", "did you mean `sink`?"]),
    (
        "runtime-typo",
        manifest(runtime={"queueCapacty": 1}),
        [],
        ["runtime.queueCapacty", "did you mean `queueCapacity`?"],
    ),
    (
        "errorPolicy-typo",
        manifest(errorPolicy={"maxRetris": 1}),
        [],
        ["errorPolicy.maxRetris", "did you mean `maxRetries`?"],
    ),
    (
        "checkpoint-typo",
        manifest(checkpoint={"stor": "file"}),
        [],
        ["checkpoint.stor", "did you mean `store`?"],
    ),
    (
        "stage-error",
        manifest(execution(process={"stages": [{"$matc": {}}]})),
        [],
        [f"{EXEC}.process.stages[0].$matc", "did you mean `$match`?"],
    ),
    ("bad-set", manifest(), ["--set", "novalue"], ["expected path=value"]),
    ("set-typo", manifest(), ["--set", "source.cuont=3"], [f"{EXEC}.source.cuont", "did you mean `count`?"]),
    ("missing-file", None, [], ["manifest file not found"]),
]


RUN_TOO = {"bad-yaml", "unknown-provider", "unresolved-placeholder", "set-typo", "missing-file"}
CASES = {f"validate-{c[0]}": ("validate", *c[1:]) for c in USER_ERRORS} | {
    f"run-{c[0]}": ("run", *c[1:]) for c in USER_ERRORS if c[0] in RUN_TOO
}


@pytest.fixture(scope="module")
def error_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[str, subprocess.CompletedProcess[str]]]:
    """Every user-error case, all started at once (start-up dominates): case -> (manifest, result)."""

    def one(case: str) -> tuple[str, tuple[str, subprocess.CompletedProcess[str]]]:
        command, document, extra, _ = CASES[case]
        directory = tmp_path_factory.mktemp(case)
        write = writer(directory)
        write("connections.yaml", _conns())
        path = str(directory / "m.yaml") if document is None else write("m.yaml", document)
        return case, (path, fluxion(command, path, *extra, cwd=directory))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(pool.map(one, CASES))


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_exit_2_with_one_message(
    case: str, error_runs: dict[str, tuple[str, subprocess.CompletedProcess[str]]]
) -> None:
    _, _, extra, expected = CASES[case]
    path, result = error_runs[case]
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET_VALUE not in result.stderr + result.stdout
    message = result.stderr.strip()
    assert message.startswith(f"error: {path}") or "novalue" in extra, message
    assert "\n" not in message, message
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "M", "--start-from", "yesterday"], "invalid --start-from `yesterday`"),
        (["validate", "M", "--var", "NOEQUALS"], "expected NAME=value for --var"),
        (["connectors", "show", "fil"], "did you mean `file`?"),
    ],
)
def test_other_cli_errors(tmp_path: Path, args: list[str], expected: str) -> None:
    path = writer(tmp_path)("m.yaml", manifest())
    result = fluxion(*[path if a == "M" else a for a in args], cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert expected in result.stderr


# ------------------------------------------------------------------ run
def file_to_file(tmp_path: Path, lines_in: int, **source: Any) -> Path:
    with (tmp_path / "in.jsonl").open("w") as handle:
        for n in range(lines_in):
            handle.write(json.dumps({"n": n, "status": "PAID" if n % 2 else "NEW"}) + "\n")
    doc = manifest(
        execution(
            source={"type": "file", "path": "in.jsonl", **source},
            process={"stages": [{"$match": {"status": "PAID"}}]},
            sink={"type": "file", "path": "out/out.jsonl"},
        ),
        id="ff",
        runtime={"microBatchSize": 7, "maxBatchWait": "PT0.05S"},
        checkpoint={"store": "file", "directory": "cp", "interval": "PT0.1S"},
    )
    return Path(writer(tmp_path)("m.yaml", doc))


def test_run_drain_then_resume_then_replay(tmp_path: Path) -> None:
    path = file_to_file(tmp_path, 20)
    out = tmp_path / "out" / "out.jsonl"
    first = fluxion("run", str(path), "--mode", "drain", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert [d["n"] for d in lines(out)] == list(range(1, 20, 2))
    size = (tmp_path / "in.jsonl").stat().st_size
    assert checkpoint(tmp_path / "cp", "ff.orders")["positions"] == {"in.jsonl": size}

    second = fluxion("run", str(path), "--mode", "drain", "-q", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert len(lines(out)) == 10  # resumed at the end: nothing new

    replay = fluxion("run", str(path), "--mode", "drain", "-q", "--start-from", "earliest", cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert [d["n"] for d in lines(out)] == list(range(1, 20, 2)) * 2


def test_run_with_set_overrides(tmp_path: Path) -> None:
    path = file_to_file(tmp_path, 6)
    result = fluxion(
        "run", str(path), "--mode", "drain", "-q",
        "--set", "sink.path=out/other.jsonl",
        "--set", "process.stages[0].$match.status=NEW",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [d["n"] for d in lines(tmp_path / "out" / "other.jsonl")] == [0, 2, 4]
    assert not (tmp_path / "out" / "out.jsonl").exists()


def test_run_failure_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    path = file_to_file(tmp_path, 2)
    (tmp_path / "in.jsonl").write_text("not json\n")
    result = fluxion("run", str(path), "--mode", "drain", "-q", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the run failed:")


def test_quickstart_runs(tmp_path: Path) -> None:
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["checkpoint"]["directory"] = str(tmp_path / "cp")
    path = writer(tmp_path)("quickstart.yaml", doc)
    result = fluxion(
        "run", path, "--mode", "drain", "-q", "--set", f"sink.path={tmp_path / 'paid.jsonl'}", cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    paid = lines(tmp_path / "paid.jsonl")
    assert paid and set(paid[0]) == {"orderId", "customerId", "tier", "totalWithTax", "lineCount"}


# ------------------------------------------------------------------ Ctrl-C
def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FLUXION, *args], cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def interrupt(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, stderr


def test_ctrl_c_on_a_followed_file_stops_with_a_final_checkpoint(tmp_path: Path) -> None:
    path = file_to_file(tmp_path, 10, follow=True, pollInterval="PT0.05S")
    out = tmp_path / "out" / "out.jsonl"
    process = start(["run", str(path), "-q"], tmp_path)
    try:
        wait_for(lambda: len(lines(out)) == 5, "the first five PAID documents")
        with (tmp_path / "in.jsonl").open("a") as handle:
            for n in range(10, 30):
                handle.write(json.dumps({"n": n, "status": "PAID" if n % 2 else "NEW"}) + "\n")
        wait_for(lambda: len(lines(out)) == 15, "the appended documents to be followed")
        code, stderr = interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    delivered = lines(out)
    assert [d["n"] for d in delivered] == list(range(1, 30, 2))
    size = (tmp_path / "in.jsonl").stat().st_size
    assert checkpoint(tmp_path / "cp", "ff.orders")["positions"] == {"in.jsonl": size}
    assert delivered[-1]["_meta"]["offset"] == size


def test_ctrl_c_on_a_rate_limited_generator_checkpoints_exactly_the_output(tmp_path: Path) -> None:
    doc = manifest(
        execution(
            source={"type": "generator", "rate": 200, "seed": 3}, sink={"type": "file", "path": "gen.jsonl"}
        ),
        id="gen",
        runtime={"microBatchSize": 10, "maxBatchWait": "PT0.05S"},
        checkpoint={"store": "file", "directory": "cp", "interval": "PT0.1S"},
    )
    path = writer(tmp_path)("m.yaml", doc)
    out = tmp_path / "gen.jsonl"
    process = start(["run", path, "-q"], tmp_path)
    try:
        wait_for(lambda: len(lines(out)) >= 30, "thirty generated documents")
        code, stderr = interrupt(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert "stopping" in stderr and "Traceback" not in stderr
    delivered = lines(out)
    positions = checkpoint(tmp_path / "cp", "gen.orders")["positions"]
    assert positions == {"generator": len(delivered)}
    assert [d["orderId"] for d in delivered] == list(range(len(delivered)))


# ------------------------------------------------------------------ connectors and schema
def test_connectors_lists_every_embedded_provider(tmp_path: Path) -> None:
    result = fluxion("connectors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {
        tuple(cell.strip() for cell in line.split("│")[1:3])
        for line in result.stdout.splitlines()
        if "│" in line
    }
    for row in [
        ("source", "file"),
        ("source", "generator"),
        ("sink", "file"),
        ("sink", "memory"),
        ("sink", "stdout"),
    ]:
        assert row in rows, result.stdout


def test_connectors_show_prints_the_option_table(tmp_path: Path) -> None:
    result = fluxion("connectors", "show", "file", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "file (source)" in result.stdout and "file (sink)" in result.stdout
    table = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 2}
    assert {"path", "format", "follow", "pollInterval", "fsync"} <= set(table)
    assert "yes" in table["path"] and "string" in table["path"]
    assert "PT0.2S" in table["pollInterval"] and "duration" in table["pollInterval"]


def test_schema_validates_the_quickstart(tmp_path: Path) -> None:
    result = fluxion("schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    quickstart = yaml.safe_load(QUICKSTART.read_text())
    assert [e.message for e in validator.iter_errors(quickstart)] == []
    shorthand = {**quickstart, "errorPolicy": "skipAndContinue", "runtime": {"maxBatchWait": 0.2}}
    assert [e.message for e in validator.iter_errors(shorthand)] == []
    typo = {**quickstart, "runtime": {"microBatchSiz": 1}}
    assert not validator.is_valid(typo)
