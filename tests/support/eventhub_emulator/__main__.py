"""Run the emulator as its own process: ``python -m tests.support.eventhub_emulator``.

Crash tests run pipelines in subprocesses and kill them; the emulator then has to
outlive them, and a separate process also keeps its CPU off the tests' GIL. The bound
port is printed alone on the first stdout line once the server accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .emulator import DEFAULT_HOST, EventHubEmulator


def _hub(spec: str) -> tuple[str, int]:
    name, _, count = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"bad hub {spec!r}, expected NAME or NAME:PARTITIONS")
    try:
        return name, int(count or "1")
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad partition count in {spec!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.eventhub_emulator")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--hub", type=_hub, action="append", default=[], metavar="NAME:PARTITIONS", help="repeatable"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with EventHubEmulator(dict(args.hub), host=args.host, port=args.port) as emulator:
        print(emulator.port, flush=True)
        while not stop.wait(3600):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
