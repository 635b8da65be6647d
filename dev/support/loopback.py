"""What every test double serving HTTP on loopback shares: its handler basics and its
context-manager/port/url surface. Each double keeps its own start() and stop()."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from socketserver import BaseServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """Answers at once (headers and body go out in separate writes, so no Nagle delay),
    logs nothing, and sends every method to ``_handle``."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()


class LoopbackServer:
    """``with double:`` runs it; ``port`` and ``url`` say where it listens."""

    host: str
    _server: BaseServer | None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        server = self._server
        if server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return int(server.server_address[1])  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        """``http://<host>:<port>``, no trailing slash."""
        return f"http://{self.host}:{self.port}"
