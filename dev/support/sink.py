"""A recording Event sink: stands in for a broker ingress or K_SINK."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dev.support.wire import from_http
from shared.events import Event


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def event(self) -> Event:
        return from_http(self.headers, self.body)


class RecordingSink:
    """Records every POST; answers with the queued statuses, then ``default_status``."""

    def __init__(self, default_status: int = 202) -> None:
        self.default_status = default_status
        self.received: list[Received] = []
        self._statuses: list[int] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # answer at once: headers and body go out in separate writes
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with sink._lock:
                    sink.received.append(Received(self.path, {k.lower(): v for k, v in
                                                              self.headers.items()}, body))
                    status = sink._statuses.pop(0) if sink._statuses else sink.default_status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def respond_with(self, *statuses: int) -> None:
        with self._lock:
            self._statuses.extend(statuses)

    def events(self) -> list[Event]:
        with self._lock:
            return [r.event() for r in self.received]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def start(self) -> RecordingSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> RecordingSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
