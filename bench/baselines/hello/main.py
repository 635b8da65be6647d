"""The same hello-world function for functions-framework."""

from typing import Any


def handle(request: Any) -> tuple[str, int]:
    return "hello, world\n", 200
