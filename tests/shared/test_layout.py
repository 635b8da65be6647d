"""The repository's structure: vendored copies, func.yaml files, entries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from dev import vendor

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT.parent / "shared" / "reference" / "func_yaml-schema.json"
FUNCTIONS = ["kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
             "email-notifier"]


def present_functions() -> list[Path]:
    return vendor.function_dirs()


def test_top_level_layout_is_the_designed_one() -> None:
    for name in ("functions", "func.yaml", "shared", "manifests", "tests", "requirements.txt",
                 "README.md"):
        assert (ROOT / name).exists(), name
    allowed = {"functions", "func.yaml", "shared", "manifests", "tests", "requirements.txt",
               "README.md", "Makefile", ".ci", "pyproject.toml", "bench", ".git", ".gitignore",
               "cli", "dev", "dist", "docs"}
    # docs/design.md §2 lists them: cli/, the kubeevent command; dev/, the tools the tests,
    # the benchmarks and `make dev` share; dist/, the files the source document's commands
    # name (links into manifests/); docs/, the design.
    # .cluster/: the control plane binaries dev/cluster/build.sh makes (git-ignored)
    ignored = (".venv", ".cluster", ".pytest", ".ruff", ".dev")
    tracked = {p.name for p in ROOT.iterdir() if not p.name.startswith(ignored)}
    assert tracked <= allowed, tracked - allowed


def test_every_reference_to_the_design_names_one_of_its_sections() -> None:
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", design, re.MULTILINE))
    cited: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        if any(part.startswith((".", "__pycache__")) for part in path.relative_to(ROOT).parts):
            continue
        for number in re.findall(r"docs/design\.md §(\d+)", path.read_text(encoding="utf-8")):
            cited.setdefault(number, set()).add(str(path.relative_to(ROOT)))
    assert cited, "the docstrings point to docs/design.md"
    assert set(cited) <= sections, {n: cited[n] for n in set(cited) - sections}
    old = "DESIGN" + " §"  # the file it meant is not in the repository
    assert not [p for p in ROOT.rglob("*.py") if old in p.read_text(encoding="utf-8")
                and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_every_vendored_copy_matches_shared() -> None:
    assert present_functions(), "no functions found"
    for function in present_functions():
        drift = vendor.copy_drift(vendor.package_of(function) / "shared")
        assert drift == [], f"run `python dev/vendor.py`: {drift}"


def test_drift_is_detected(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    shutil.copytree(vendor.SHARED, target)
    everything = vendor.shared_sources()
    assert vendor.copy_drift(target, everything) == []
    (target / "errors.py").write_text("# edited in the copy\n")
    (target / "stray.py").write_text("x = 1\n")
    drift = vendor.copy_drift(target, everything)
    assert any(d.endswith("errors.py") for d in drift)
    assert any("stray.py" in d and "not in shared/" in d for d in drift)


def test_a_function_gets_only_the_shared_modules_it_imports(tmp_path: Path) -> None:
    """What its package and entries import, and what those import in turn; a module it
    does not import is drift in its copy."""
    package = tmp_path / "fn" / "fn_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text("from .shared import logs\nfrom .shared.kube import Kube\n")
    (tmp_path / "fn" / "main.py").write_text("from fn_pkg.shared.boundary import x\n")
    wanted = {p.name for p in vendor.needed_sources(package)}
    assert {"__init__.py", "logs.py", "kube.py", "boundary.py", "errors.py",
            "events.py"} <= wanted, "kube and boundary import errors and events"
    assert "fit.py" not in wanted and "cache.py" not in wanted
    copy = tmp_path / "kubeevent-enricher-sink"
    shutil.copytree(ROOT / "functions" / "kubeevent-enricher-sink", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shared = vendor.package_of(copy) / "shared"
    assert vendor.copy_drift(shared) == []
    assert not (shared / "cache.py").exists(), "the enricher imports no cache"
    shutil.copy(vendor.SHARED / "cache.py", shared / "cache.py")
    assert any("cache.py" in d and "not imported by the function" in d
               for d in vendor.copy_drift(shared))


def test_func_yaml_files_are_generated_from_the_defaults() -> None:
    defaults = yaml.safe_load((ROOT / "func.yaml").read_text())
    for function in present_functions():
        text = (function / "func.yaml").read_text()
        assert text == vendor.dump(vendor.merged_func_yaml(function, defaults)), function.name
        data = yaml.safe_load(text)
        assert data["name"] == function.name
        assert data["build"]["builder"] in ("pack", "s2i")
        assert data["deploy"]["options"]["scale"]["min"] == 0


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"func.yaml schema not found at {SCHEMA}")
def test_func_yaml_files_validate_against_the_knative_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    for path in [ROOT / "func.yaml"] + [f / "func.yaml" for f in present_functions()]:
        data = yaml.safe_load(path.read_text())
        # created is a date-time; YAML may load it as str already (quoted)
        jsonschema.validate(data, schema)


def test_each_function_has_both_entries_and_no_parliament() -> None:
    """func's layout (the Python project ``function`` with ``new()``) and
    functions-framework's ``main.py``; nothing of parliament's, which func 1.18-1.22
    cannot build and 1.23 treats as legacy (a Procfile or an import of it)."""
    for function in present_functions():
        assert not (function / "Procfile").exists() and not (function / "func.py").exists()
        assert "AsgiFunction(build)" in (function / "function.py").read_text()
        assert "functions_framework_target(" in (function / "main.py").read_text()
        project = tomllib.loads((function / "pyproject.toml").read_text())["project"]
        assert project["name"] == "function"
        reqs = (function / "requirements.txt").read_text()
        assert "cloudevents==1.12.0" in reqs and "parliament" not in reqs
        pins = [line for line in reqs.splitlines() if line.strip() and not line.startswith("#")]
        for line in pins:
            assert "==" in line, f"{function.name}: unpinned {line}"
        # The same pins in both entries, but for the CloudEvents SDK's major version.
        shared = {p for p in pins if not p.startswith(("cloudevents==", "functions-framework"))}
        assert set(project["dependencies"]) == shared | {"cloudevents==2.2.0"}, function.name
        for path in function.rglob("*.py"):
            assert not re.search(r"^\s*(from|import)\s+parliament\b", path.read_text(),
                                 re.M), path


def test_only_the_boundary_knows_the_cloudevents_sdk() -> None:
    """The cores take plain attributes and data (``shared.events.Event``): the SDK is
    imported by ``shared/sdk.py`` alone and used by ``shared/events.py`` alone, so a core
    runs the same whichever SDK major version its entry installed."""
    sdk_import = re.compile(r"^\s*(from|import)\s+cloudevents\b", re.M)
    uses_sdk = re.compile(r"^\s*from\s+\.(shared)?\s*import\s+.*\bsdk\b|\.sdk\s+import", re.M)
    sources = [*(ROOT / "shared").glob("*.py")]
    for function in present_functions():
        sources += [p for p in function.rglob("*.py") if "shared" not in p.relative_to(
            function).parts]
    for path in sources:
        text = path.read_text()
        if path.name != "sdk.py":
            assert not sdk_import.search(text), f"{path}: imports the CloudEvents SDK"
        if path.name not in ("sdk.py", "events.py"):
            assert not uses_sdk.search(text), f"{path}: uses the SDK shim"


def test_the_tools_do_not_import_the_tests() -> None:
    """bench/ and the dev stack (``make dev``) are tools: they run without the test package."""
    code = ("import sys, bench.__main__, bench.filter, bench.notifier, bench.enricher, "
            "bench.coldstart, dev.stack.__main__, dev.cluster.__main__, dev.vendor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tests'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_dist_holds_what_the_source_documents_commands_name() -> None:
    """Step 1.4 runs ``cat dist/kubeevent.artifactpromotionrun.template.yaml | envsubst |
    kubectl apply -f -`` from the project's directory: the file is the shipped one."""
    linked = ROOT / "dist" / "kubeevent.artifactpromotionrun.template.yaml"
    assert linked.is_symlink() and linked.resolve() == (
        ROOT / "manifests" / "templates" / "kubeevent.artifactpromotionrun.template.yaml")
