"""A layer-4 relay: what kube-proxy does for a Service's ClusterIP, in user space.

``python -m dev.cluster.relay [--hold SECONDS] LISTEN=TARGET ...``, each side
``tcp:HOST:PORT`` or ``unix:PATH``. Prints ``READY`` once every listener is bound, then
copies bytes both ways for each connection until either side closes. With ``--hold`` a
connection whose target is not up yet is held that long while the relay keeps trying
(what Knative Serving's activator does for a function scaled to zero). A unix socket
also carries traffic between network namespaces (a socket file is reached through the
file system, not the network).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        kind, _, rest = text.partition(":")
        if kind == "unix" and rest:
            return cls("unix", path=rest)
        host, _, port = rest.rpartition(":")
        if kind != "tcp" or not host or not port.isdigit():
            raise ValueError(f"not tcp:HOST:PORT or unix:PATH: {text!r}")
        return cls("tcp", host=host, port=int(port))

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.kind == "unix":
            return await asyncio.open_unix_connection(self.path)
        return await asyncio.open_connection(self.host, self.port)

    async def serve(self, handler: object) -> asyncio.AbstractServer:
        if self.kind == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return await asyncio.start_unix_server(handler, self.path)  # type: ignore[arg-type]
        return await asyncio.start_server(handler, self.host, self.port,  # type: ignore[arg-type]
                                          reuse_address=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


def _handler(target: Endpoint, hold: float = 0.0) -> object:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deadline = asyncio.get_running_loop().time() + hold
        while True:
            try:
                up_reader, up_writer = await target.connect()
                break
            except OSError:
                if asyncio.get_running_loop().time() >= deadline:
                    writer.close()
                    return
                await asyncio.sleep(0.02)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for each in (writer, up_writer):
            each.close()
    return handle


def parse(pairs: Sequence[str]) -> list[tuple[Endpoint, Endpoint]]:
    found = []
    for pair in pairs:
        listen, sep, target = pair.partition("=")
        if not sep:
            raise ValueError(f"not LISTEN=TARGET: {pair!r}")
        found.append((Endpoint.parse(listen), Endpoint.parse(target)))
    return found


async def run(pairs: Sequence[tuple[Endpoint, Endpoint]], ready: object = None,
              hold: float = 0.0) -> None:
    servers = [await listen.serve(_handler(target, hold)) for listen, target in pairs]
    if callable(ready):
        ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: Sequence[str]) -> int:
    args, hold = list(argv), 0.0
    try:
        if args[:1] == ["--hold"]:
            hold = float(args[1])
            args = args[2:]
        pairs = parse(args)
    except (ValueError, IndexError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run(pairs, ready=lambda: print("READY", flush=True), hold=hold))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
