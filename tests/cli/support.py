"""Driving ``kubeevent`` as a subprocess, on the seed's examples and files made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
SEED_ADMIN = EXAMPLES / "seed-clustersubscription-admin.yaml"
SEED_CONFIG_PATCH = EXAMPLES / "seed-katanomi-config-patch.yaml"
TEMPLATES = ROOT / "manifests" / "templates" / "kubeevent.artifactpromotionrun.template.yaml"
CONFIG_MAP = ROOT / "manifests" / "base" / "katanomi-config.yaml"
PLATFORM_URL = "https://acp.example.com"
PENDING_TEMPLATE = "kubeevent.artifactpromotionrun.approvalpending"
TYPE = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.{}.v1alpha1"


SCRIPT = Path(sys.executable).with_name("kubeevent")


def command() -> list[str]:
    """The console script the README's setup installs next to this interpreter; else the
    package run from its folder (``test_installed`` tells the setup is missing)."""
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "kubeevent_cli"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def assert_user_error(self, *phrases: str) -> str:
        """Exit 2, exactly one line on stderr naming the problem, no stack trace."""
        assert self.returncode == 2, (self.returncode, self.stdout, self.stderr)
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("kubeevent: error: "), lines[0]
        assert "Traceback" not in self.stderr + self.stdout
        for phrase in phrases:
            assert phrase in lines[0], lines[0]
        return lines[0]


def run(*args: str | Path, stdin: str | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> Result:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PLATFORM_URL", "CEL_ENGINE", "KUBEEVENT_DEBUG")}
    if not SCRIPT.exists():
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "cli"), *filter(None, [environ.get("PYTHONPATH")])])
    environ.update(env or {})
    done = subprocess.run([*command(), *map(str, args)], input=stdin, capture_output=True,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          text=True, cwd=cwd or ROOT, env=environ, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return Result(done.returncode, done.stdout, done.stderr)


def write_yaml(path: Path, *docs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def seed_subscription() -> dict[str, Any]:
    return yaml.safe_load(SEED_ADMIN.read_text(encoding="utf-8"))


def subscription_for(user: str, *, name: str | None = None, owner: str | None = None,
                     reasons: tuple[str, ...] | None = None, namespace: str | None = None,
                     channels: str | None = None) -> dict[str, Any]:
    """The seed's subscription, made for ``user`` (optionally only some event types)."""
    sub = seed_subscription()
    sub["metadata"]["name"] = name or f"{user}-artifactpromotionrun-subscription"
    annotations = sub["metadata"]["annotations"]
    annotations["katanomi.dev/owned.username"] = owner if owner is not None else user
    if channels is not None:
        annotations["core.katanomi.dev/sink.pluginclasses"] = channels
    sub["spec"]["subscriber"]["name"] = user
    sub["spec"]["subscriber"]["info"] = {"mail": f"{user}@example.com"}
    entry = sub["spec"]["subscriptions"][0]
    if namespace is not None:
        entry["object"]["namespace"] = namespace
    if reasons is not None:
        entry["events"] = [e for e in entry["events"]
                           if any(e["type"] == TYPE.format(r) for r in reasons)]
    return sub


def by_name(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in payload["subscriptions"]}
