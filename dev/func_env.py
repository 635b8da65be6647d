"""The requirements of the environment func builds for the functions, for the tests.

    python dev/func_env.py > requirements-func.txt

func's scaffolding installs ``func-python`` (the version func 1.22 pins) and the
function's own project (its pyproject.toml). The tests run all three functions that way
from one environment (``.venv-func``, see the Makefile): this prints func-python's pin and
the union of the functions' pinned dependencies, and fails on two pins of one package
that disagree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What func 1.22 (knative.dev/func v0.49.2) writes into the service project it builds.
FUNC_PYTHON = "func-python==0.8.1"


def requirements() -> list[str]:
    pins: dict[str, str] = {}
    for project in sorted((ROOT / "functions").glob("*/pyproject.toml")):
        for dependency in tomllib.loads(project.read_text())["project"]["dependencies"]:
            name = re.split(r"[=<>!~ ;\[]", dependency, maxsplit=1)[0].lower()
            if pins.setdefault(name, dependency) != dependency:
                raise SystemExit(f"{project.parent.name}: {dependency} disagrees with "
                                 f"{pins[name]} of another function")
    return [FUNC_PYTHON, *sorted(pins.values(), key=str.lower)]


if __name__ == "__main__":
    sys.stdout.write("\n".join(requirements()) + "\n")
