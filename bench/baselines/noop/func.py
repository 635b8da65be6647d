"""A no-op parliament function: reads the request, answers 202 with no body."""

from typing import Any


def main(context: Any) -> tuple[bytes, int]:
    context.request.get_data()
    return b"", 202
