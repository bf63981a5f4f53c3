"""Peers the chaos suite needs beyond the shared fixtures: a Tansu broker behind a TCP proxy.

Kafka clients learn broker addresses from metadata, so a proxy in front of
a broker only stays in the path if the broker *advertises* the proxy's
address. The broker therefore listens on one port and advertises another,
on which :class:`~tests.support.tcp_proxy.TcpProxy` forwards to it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.kafka_broker import (
    BrokerUnavailable,
    TansuBroker,
    _api_versions_ok,
    free_port,
    tansu_binary,
)
from tests.support.tcp_proxy import TcpProxy


@dataclass
class ProxiedBroker:
    broker: TansuBroker
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        """What clients use: the proxy (also the advertised address, so they never bypass it)."""
        return self.proxy.address


@contextlib.contextmanager
def proxied_broker(ready_timeout: float = 20.0) -> Iterator[ProxiedBroker]:
    listen, proxy_port = free_port(), free_port()
    log_path = Path(tempfile.mkdtemp(prefix="tansu-proxied-")) / "tansu.log"
    env = {**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{listen}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{proxy_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    broker = TansuBroker(port=listen, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _api_versions_ok(listen):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BrokerUnavailable(f"tansu did not start:\n{broker.log_tail()}")
            time.sleep(0.02)
        with TcpProxy("127.0.0.1", listen, port=proxy_port) as proxy:
            yield ProxiedBroker(broker, proxy)
    finally:
        broker.stop()
