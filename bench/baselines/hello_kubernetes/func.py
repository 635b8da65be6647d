"""The hello-world parliament function plus ``import kubernetes``: the cold-start floor of
any function built on the official Kubernetes client."""

from typing import Any

import kubernetes  # noqa: F401  (the point of this baseline: its import time)


def main(context: Any) -> tuple[str, int]:
    return "hello, world\n", 200
