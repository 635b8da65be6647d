"""A hello-world parliament function: the cold-start baseline."""

from typing import Any


def main(context: Any) -> tuple[str, int]:
    return "hello, world\n", 200
