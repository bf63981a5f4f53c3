"""A real MongoDB wire-protocol server (``nx-27017``, SQLite-backed) for tests and benchmarks.

Always started with ``--data-dir``: the default single-file mode shares one
table namespace across logical databases and breaks change streams. The
helper picks a free loopback port, waits (with a deadline) until the server
answers ``ping``, and can stop and restart it on the same port and data
directory, which is how tests check that resume tokens survive a server
restart. See ``/work/shared/reference/test-peers.md`` for the server's quirks.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError


class MongoServerUnavailable(RuntimeError):
    """The nx-27017 binary is missing or the server did not become ready in time."""


def nx_binary() -> str:
    """The ``nx-27017`` executable next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "nx-27017"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nx-27017")
    if found is None:
        raise MongoServerUnavailable("nx-27017 is not installed (pip install 'fluxion-flows[test]')")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MongoServer:
    """One nx-27017 process on ``port`` with its data in ``data_dir``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    ready_timeout: float = 20.0
    in_memory: bool = False
    """``--data-dir memory``: isolated in-memory databases (faster, steadier; gone on restart)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"nx-{self.port}.log"

    def start(self) -> MongoServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            nx_binary(),
            "--data-dir",
            "memory" if self.in_memory else str(self.data_dir),
            "-p",
            str(self.port),
            "--log-file",
            str(self.log_file),
            "--pid-file",
            str(self.data_dir.parent / f"nx-{self.port}.pid"),
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise MongoServerUnavailable(
                    f"nx-27017 exited with {self.process.returncode}; see {self.log_file}"
                )
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise MongoServerUnavailable(f"nx-27017 on port {self.port} not ready after {self.ready_timeout}s")

    def answers(self) -> bool:
        """True when a ``ping`` round trip succeeds."""
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300
            )
            with client:
                client.admin.command("ping")
            return True
        except PyMongoError:
            return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``); the data directory stays."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()


@contextlib.contextmanager
def running_mongo(data_dir: Path | None = None, *, in_memory: bool = False) -> Iterator[MongoServer]:
    """A started server for the block's duration; a temporary data directory unless one is given."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nx27017-"))) / "data"
        server = MongoServer(data_dir, in_memory=in_memory)
        server.start()
        stack.callback(server.stop)
        yield server
