"""``make dist``: the offline package the source document expects, laid out in ``dist/``.

From the project's root, the source document's commands then run verbatim (``cat
dist/kubeevent.artifactpromotionrun.template.yaml | envsubst | kubectl apply -f -``), and
an air-gapped site gets, beside it:

* ``dist/manifests/<overlay>.yaml`` — each overlay rendered (``kubectl kustomize``), its
  images named ``$REGISTRY/<function>:$TAG`` (the registry the site mirrors into);
* ``dist/functions/<function>/`` — each function's source (its vendored ``shared/``
  included), ``wheels/`` with every pinned requirement for the image's platform, and a
  ``Containerfile`` that installs from them with no index;
* ``dist/images.txt`` — the image references the manifests use, to push;
* ``dist/README.md`` — the order of the steps.

Wheels come from the project's wheel cache (``.venv-func/wheels``, filled by ``make
test``'s setup) when it holds them all, else from the package index: the package is made
where there is a network, and used where there is none.

    python dev/dist.py --registry registry.local/kubeevent --tag 1.4.0 [--offline]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dev.stack.manifests import OVERLAYS, render_text  # noqa: E402

DIST = ROOT / "dist"
TEMPLATE = "kubeevent.artifactpromotionrun.template.yaml"
FUNCTIONS = ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
             "email-notifier")
PLACEHOLDER = "registry.example.com/kubeevent-enricher/"
WHEEL_CACHE = ROOT / ".venv-func" / "wheels"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
CONTAINERFILE = """\
# Built where there is no package index: every requirement is in wheels/.
#   podman build -t {registry}/{name}:{tag} .     (or docker build)
# The wheels are for CPython {python} on {machine} Linux: the base image must be that Python.
ARG PYTHON_IMAGE=python:{python}-slim
FROM ${{PYTHON_IMAGE}}
WORKDIR /function
COPY wheels/ /wheels/
COPY requirements.txt ./
RUN pip install --no-index --find-links /wheels -r requirements.txt && rm -rf /wheels
COPY . .
EXPOSE 8080
USER 65532
CMD ["python", "-m", "functions_framework", "--target", "handle", "--host", "0.0.0.0", \\
     "--port", "8080"]
"""


class DistError(Exception):
    """A one-line reason the package could not be made."""


def wheels(function: Path, into: Path, offline: bool) -> None:
    """Every pinned requirement of ``function`` as wheels for the image's platform."""
    into.mkdir(parents=True, exist_ok=True)
    requirements = function / "requirements.txt"
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
            "--dest", str(into), "-r", str(requirements)]
    if WHEEL_CACHE.is_dir():
        cached = subprocess.run([*base, "--no-index", "--find-links", str(WHEEL_CACHE)],
                                capture_output=True, text=True, check=False)
        if cached.returncode == 0:
            return
        if offline:
            raise DistError(f"{function.name}: a requirement is not in {WHEEL_CACHE} and "
                            f"--offline forbids the index: {_last(cached.stderr)}")
    elif offline:
        raise DistError(f"--offline needs the wheel cache {WHEEL_CACHE} (make test fills it)")
    done = subprocess.run(base, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DistError(f"{function.name}: pip download failed: {_last(done.stderr)}")


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def build(registry: str, tag: str, offline: bool, out: Path = DIST) -> list[str]:
    registry = registry.rstrip("/")
    if not registry or ("/" not in registry and "." not in registry and ":" not in registry):
        raise DistError(f"--registry {registry!r}: the registry (and path) the site's images "
                        "live under, e.g. registry.local/kubeevent")
    if not tag or any(c in tag for c in " /:@"):
        raise DistError(f"--tag {tag!r}: an image tag, e.g. 1.4.0")
    for stale in ("manifests", "functions", "images.txt", "README.md"):
        target = out / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out.mkdir(exist_ok=True)
    template = out / TEMPLATE
    if not template.exists():  # the repository's link; a copy elsewhere
        shutil.copy(ROOT / "manifests" / "templates" / TEMPLATE, template)
    images: list[str] = []
    (out / "manifests").mkdir()
    for overlay in sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir()):
        text = render_text(overlay)
        for name in FUNCTIONS:
            text = text.replace(f"{PLACEHOLDER}{name}:latest", f"{registry}/{name}:{tag}")
        if PLACEHOLDER in text:
            raise DistError(f"overlay {overlay}: an image still under {PLACEHOLDER}")
        (out / "manifests" / f"{overlay}.yaml").write_text(text, encoding="utf-8")
        for line in text.splitlines():
            field = line.strip().removeprefix("- ").strip()
            image = field.removeprefix("image:").strip() if field.startswith("image:") else ""
            if image and image not in images:
                images.append(image)
    for name in FUNCTIONS:
        source = ROOT / "functions" / name
        target = out / "functions" / name
        shutil.copytree(source, target, ignore=SKIP, symlinks=False)
        wheels(source, target / "wheels", offline)
        (target / "Containerfile").write_text(CONTAINERFILE.format(
            registry=registry, name=name, tag=tag, machine=platform.machine(),
            python=f"{sys.version_info.major}.{sys.version_info.minor}"), encoding="utf-8")
    (out / "images.txt").write_text("".join(f"{i}\n" for i in sorted(images)),
                                    encoding="utf-8")
    (out / "README.md").write_text(README.format(registry=registry, tag=tag),
                                   encoding="utf-8")
    return images


README = """\
# kubeevent-enricher offline package ({tag})

Made by `make dist REGISTRY={registry} TAG={tag}`. From the directory holding `dist/`:

1. Build and push each function's image (no package index needed):
   `for f in dist/functions/*/; do n=$(basename $f); podman build -t {registry}/$n:{tag} $f &&
   podman push {registry}/$n:{tag}; done` — `dist/images.txt` lists every image the
   manifests use (Knative's event-display for the dead letters too: mirror it).
2. Install: `kubectl apply -f dist/manifests/knative.yaml` (plain Knative: the whole chain),
   or `dist/manifests/katanomi.yaml` beside Katanomi (see the project's README first: do
   not `kubectl delete` it), or `dist/manifests/jetstream.yaml` (a NATS JetStream channel).
3. Templates, as the source document's step 1.4 says:
   `export PLATFORM_URL=https://<platform>; cat dist/kubeevent.artifactpromotionrun.template.yaml
   | envsubst | kubectl apply -f -`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lay out the offline package in dist/.")
    parser.add_argument("--registry", required=True,
                        help="where the site's images live, e.g. registry.local/kubeevent")
    parser.add_argument("--tag", required=True, help="the images' tag, e.g. 1.4.0")
    parser.add_argument("--offline", action="store_true",
                        help="wheels only from the project's wheel cache, never the index")
    parser.add_argument("--out", default=str(DIST), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        images = build(args.registry, args.tag, args.offline, Path(args.out))
    except DistError as exc:
        print(f"make dist: {exc}", file=sys.stderr)
        return 2
    print(f"dist/: {len(FUNCTIONS)} functions with their wheels, "
          f"{len(list((Path(args.out) / 'manifests').iterdir()))} overlays rendered, "
          f"{len(images)} images (dist/images.txt)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
