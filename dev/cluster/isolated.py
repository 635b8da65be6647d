"""Run a command in a network namespace of its own, reachable only through relays.

``python -m dev.cluster.isolated [--relay LISTEN=TARGET ...] [--etc DIR --hosts FILE]
[--same-network] -- CMD ...``

Every Knative controller built on ``sharedmain`` binds ``:8080`` for its health probes
(not configurable), and so does the InMemoryChannel dispatcher for events: each
controller therefore gets a network namespace with only ``lo``, where relays
(``dev.cluster.relay``) reach the API server through a unix socket and let the API
server reach a webhook's port through another. This process stays the parent: it
forwards SIGTERM/SIGINT to the command and exits with its code, so stopping it by its
PID stops both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dev.cluster import netns, relay


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if "--" not in args:
        print("usage: python -m dev.cluster.isolated [--relay L=T ...] -- CMD ...",
              file=sys.stderr)
        return 2
    split = args.index("--")
    options, command = args[:split], args[split + 1:]
    pairs = [options[i + 1] for i, o in enumerate(options) if o == "--relay"]
    etc = [options[i + 1] for i, o in enumerate(options) if o == "--etc"]
    hosts = [options[i + 1] for i, o in enumerate(options) if o == "--hosts"]
    try:
        if "--same-network" not in options:
            netns.new_network()
        if etc:
            netns.overlay_etc(Path(etc[0]), Path(hosts[0]) if hosts else None)
        parsed = relay.parse(pairs)
    except (netns.NamespaceError, ValueError) as exc:
        print(f"isolated: {exc}", file=sys.stderr)
        return 2
    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(relay.run(parsed, ready=ready.set)),
                     daemon=True).start()
    if not ready.wait(10):
        print("isolated: relays did not start", file=sys.stderr)
        return 2
    child = subprocess.Popen(command)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return child.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
