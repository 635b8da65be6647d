"""A no-op function as func serves it: reads the request, answers 202 with no body."""

from __future__ import annotations

from typing import Any


class Noop:
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            more = bool((await receive()).get("more_body"))
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def new() -> Noop:
    return Noop()
