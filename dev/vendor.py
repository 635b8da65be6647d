"""Copy shared/ into every function and write each func.yaml from the defaults.

    python dev/vendor.py           # write the copies and func.yaml files
    python dev/vendor.py --check   # exit 1 and list what drifted; write nothing

Each function folder holds exactly one Python package (its own modules); the
shared helpers it imports (and what they import) are copied to ``<package>/shared/``
so a function deploys from its folder alone and never imports across folders. In
func.yaml, every key set in the top-level ``func.yaml`` is taken from there; the function's own keys
(name, envs, namespace, service account) are kept, and ``name`` is the folder.
"""

from __future__ import annotations

import argparse
import ast
import copy
import filecmp
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"
FUNCTIONS = ROOT / "functions"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def function_dirs() -> list[Path]:
    return sorted(p for p in FUNCTIONS.iterdir() if (p / "func.yaml").exists())


def package_of(function: Path) -> Path:
    packages = [p for p in function.iterdir() if (p / "__init__.py").exists()]
    if len(packages) != 1:
        raise SystemExit(f"{function.name}: expected exactly one package, found "
                         f"{sorted(p.name for p in packages)}")
    return packages[0]


def shared_sources() -> list[Path]:
    files = SHARED.rglob("*.py")
    return sorted(p.relative_to(SHARED) for p in files if "__pycache__" not in p.parts)


def _relative_imports(path: Path, inside_shared: bool, package: str = "") -> set[str]:
    """The shared modules ``path`` imports, by module name: within shared/ ``from .x
    import`` and ``from . import x``; in a function's package ``from .shared(.x) import``;
    in its entries (``package`` given) ``from <package>.shared(.x) import``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if package and node.level == 0 and module.startswith(f"{package}."):
            module, level = module.removeprefix(f"{package}."), 1
        else:
            level = node.level
        if level != 1:
            continue
        if inside_shared:
            found |= {module} if module else {alias.name for alias in node.names}
        elif module == "shared":
            found |= {alias.name for alias in node.names}
        elif module.startswith("shared."):
            found.add(module.split(".", 1)[1])
    return {name.split(".")[0] for name in found}


def needed_sources(package: Path) -> list[Path]:
    """What of shared/ a function's package imports, with what those import in turn:
    only that is copied into it."""
    own = [p for p in package.rglob("*.py")
           if "shared" not in p.relative_to(package).parts and "__pycache__" not in p.parts]
    entries = sorted(package.parent.glob("*.py"))  # function.py, main.py
    wanted: set[str] = set()
    todo = set().union(*(_relative_imports(p, inside_shared=False) for p in own),
                       *(_relative_imports(p, False, package.name) for p in entries))
    while todo:
        name = todo.pop()
        if name in wanted or not (SHARED / f"{name}.py").exists():
            continue
        wanted.add(name)
        todo |= _relative_imports(SHARED / f"{name}.py", inside_shared=True) - wanted
    return sorted(Path(f"{name}.py") for name in wanted | {"__init__"})


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def copy_drift(target: Path, wanted_files: list[Path] | None = None) -> list[str]:
    """Files that differ between shared/ and a vendored copy, both ways: ``wanted_files``
    (by default what the package holding ``target`` imports) must be there and equal,
    nothing else may be."""
    drift = []
    wanted = set(needed_sources(target.parent) if wanted_files is None else wanted_files)
    for rel in wanted:
        dest = target / rel
        if not dest.exists() or not filecmp.cmp(SHARED / rel, dest, shallow=False):
            drift.append(_shown(dest))
    if target.exists():
        for extra in target.rglob("*.py"):
            if "__pycache__" not in extra.parts and extra.relative_to(target) not in wanted:
                rel = extra.relative_to(target)
                drift.append(f"{_shown(extra)} ("
                             + ("not imported by the function)" if (SHARED / rel).exists()
                                else "not in shared/)"))
    return sorted(drift)


def merged_func_yaml(function: Path, defaults: dict[str, Any]) -> dict[str, Any]:
    path = function / "func.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else {}
    result = copy.deepcopy(current or {})

    def overlay(dest: dict[str, Any], src: dict[str, Any]) -> None:
        for key, value in src.items():
            if isinstance(value, dict) and isinstance(dest.get(key), dict):
                overlay(dest[key], value)
            else:
                dest[key] = copy.deepcopy(value)

    overlay(result, defaults)
    ordered = {"specVersion": result.pop("specVersion"), "name": function.name}
    result.pop("name", None)
    ordered.update(result)
    return ordered


def dump(data: dict[str, Any]) -> str:
    header = ("# Generated by dev/vendor.py from the top-level func.yaml; edit the\n"
              "# function's own keys (envs, namespace, serviceAccountName) here, the defaults"
              " there.\n")
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift, write nothing")
    args = parser.parse_args(argv)
    defaults = yaml.safe_load((ROOT / "func.yaml").read_text())
    problems: list[str] = []
    for function in function_dirs():
        target = package_of(function) / "shared"
        drift = copy_drift(target)
        func_yaml = dump(merged_func_yaml(function, defaults))
        yaml_path = function / "func.yaml"
        yaml_stale = not yaml_path.exists() or yaml_path.read_text() != func_yaml
        if args.check:
            problems += drift
            if yaml_stale:
                problems.append(f"{yaml_path.relative_to(ROOT)} (differs from the defaults)")
            continue
        if drift:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for rel in needed_sources(target.parent):
                shutil.copy2(SHARED / rel, target / rel)
            print(f"vendored shared/ into {target.relative_to(ROOT)}")
        if yaml_stale:
            yaml_path.write_text(func_yaml)
            print(f"wrote {yaml_path.relative_to(ROOT)}")
    if problems:
        print("out of date (run: python dev/vendor.py):", *problems, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
