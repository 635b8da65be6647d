"""The same no-op function for functions-framework (GET answers health probes)."""

from typing import Any


def handle(request: Any) -> tuple[bytes, int]:
    if request.method == "GET":
        return b"OK", 200
    request.get_data()
    return b"", 202
