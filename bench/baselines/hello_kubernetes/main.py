"""The same kubernetes-importing hello-world function for functions-framework."""

from typing import Any

import kubernetes  # noqa: F401  (the point of this baseline: its import time)


def handle(request: Any) -> tuple[str, int]:
    return "hello, world\n", 200
