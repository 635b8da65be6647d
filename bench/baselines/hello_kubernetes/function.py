"""The hello-world func function plus ``import kubernetes``: the cold-start floor of any
function built on the official Kubernetes client."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import kubernetes  # noqa: F401  (the point of this baseline: its import time)

_spec = importlib.util.spec_from_file_location(
    "hello_function", Path(__file__).resolve().parents[1] / "hello" / "function.py")
assert _spec is not None and _spec.loader is not None
_hello = importlib.util.module_from_spec(_spec)
sys.modules["hello_function"] = _hello
_spec.loader.exec_module(_hello)
new = _hello.new
