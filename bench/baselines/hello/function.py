"""A hello-world function as func serves it (func-python's ``new()``): the cold-start
baseline. Like the one ``func create -l python -t cloudevents`` makes, it answers every
request with a small CloudEvent."""

from __future__ import annotations

from typing import Any


class Hello:
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:  # read the request, as any function does
            more = bool((await receive()).get("more_body"))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"ce-specversion", b"1.0"), (b"ce-id", b"hello"), (b"ce-source", b"/hello"),
            (b"ce-type", b"hello.world"), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"message": "hello, world"}'})


def new() -> Hello:
    return Hello()
