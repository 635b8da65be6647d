"""``make dist``: the offline package, laid out from the project's own files and the wheel
cache the setup filled (no index: ``--offline``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DIST = [sys.executable, str(ROOT / "dev" / "dist.py")]
FUNCTIONS = ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
             "email-notifier")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([*DIST, "--registry", "registry.local/kubeevent", "--tag", "1.4.0",
                           "--offline", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dist/: 4 functions with their wheels, 3 overlays")
    return out


def test_the_template_the_source_document_names_is_there(package: Path) -> None:
    shipped = ROOT / "manifests" / "templates" / "kubeevent.artifactpromotionrun.template.yaml"
    assert (package / shipped.name).read_text(encoding="utf-8") \
        == shipped.read_text(encoding="utf-8")


def test_every_overlay_is_rendered_with_the_sites_images(package: Path) -> None:
    images = (package / "images.txt").read_text(encoding="utf-8").split()
    assert sorted(i for i in images if i.startswith("registry.local/")) \
        == sorted(f"registry.local/kubeevent/{f}:1.4.0" for f in FUNCTIONS)
    for overlay in ("knative", "katanomi", "jetstream"):
        text = (package / "manifests" / f"{overlay}.yaml").read_text(encoding="utf-8")
        assert "registry.example.com" not in text and ":latest" not in text
        docs = [d for d in yaml.safe_load_all(text) if d]
        used = {c["image"] for d in docs if d["kind"] == "Service"
                and d["apiVersion"].startswith("serving.knative.dev")
                for c in d["spec"]["template"]["spec"]["containers"]}
        assert used and used <= set(images), overlay


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_installs_from_its_wheels_alone(package: Path, function: str) -> None:
    folder = package / "functions" / function
    assert (folder / "main.py").is_file() and (folder / "func.yaml").is_file()
    assert not list(folder.rglob("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run",
                           "--ignore-installed", "--no-index", "--find-links",
                           str(folder / "wheels"), "-r", str(folder / "requirements.txt")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Would install" in done.stdout
    containerfile = (folder / "Containerfile").read_text(encoding="utf-8")
    assert "pip install --no-index --find-links /wheels -r requirements.txt" in containerfile
    assert f"python:{sys.version_info.major}.{sys.version_info.minor}-slim" in containerfile


@pytest.mark.parametrize(("flags", "said"), [
    (["--registry", "", "--tag", "1.4.0"], "--registry ''"),
    (["--registry", "registry.local/kubeevent", "--tag", "a b"], "--tag 'a b'"),
])
def test_what_cannot_name_an_image_is_refused_in_one_line(tmp_path: Path, flags: list[str],
                                                          said: str) -> None:
    done = subprocess.run([*DIST, *flags, "--offline", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"make dist: {said}") and done.stderr.count("\n") == 1
