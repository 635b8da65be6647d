"""Helpers shared by the corpwechat-notifier tests."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_FILE = ROOT / "manifests" / "templates" / "kubeevent.artifactpromotionrun.template.yaml"
CRD_FILE = ROOT / "manifests" / "crds" / "notificationtemplates.yaml"
DELIVERY_CRD = ROOT / "manifests" / "delivery" / "notificationdeliveries.yaml"
PLATFORM_URL = "https://acp.example.com"


def envsubst(text: str, **variables: str) -> str:
    """Run the real ``envsubst`` (gettext-base) exactly as the guide's pipeline does."""
    binary = shutil.which("envsubst")
    if binary is None:
        pytest.fail("envsubst is not installed (Debian/Ubuntu: apt-get install gettext-base)")
    env = {k: v for k, v in os.environ.items() if k != "PLATFORM_URL"}
    env.update(variables)
    done = subprocess.run([binary], input=text, env=env, capture_output=True, text=True,
                          check=True, timeout=30)
    return done.stdout


def installed_templates(platform_url: str | None = PLATFORM_URL) -> list[dict[str, Any]]:
    """The shipped templates after ``export PLATFORM_URL=...; cat ... | envsubst``."""
    variables = {} if platform_url is None else {"PLATFORM_URL": platform_url}
    text = envsubst(TEMPLATE_FILE.read_text(encoding="utf-8"), **variables)
    return [doc for doc in yaml.safe_load_all(text) if doc]



def b64(text: str) -> str:
    """A Secret's ``data`` value."""
    return base64.b64encode(text.encode()).decode()


def seed_katanomi_config(namespace: str = "cpaas-system") -> dict[str, Any]:
    """The source document's katanomi-config (its template mapping) as a ConfigMap."""
    data = yaml.safe_load((ROOT / "manifests" / "examples" / "seed-katanomi-config-patch.yaml")
                          .read_text(encoding="utf-8"))["data"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "katanomi-config", "namespace": namespace}, "data": data}


def add_notification_objects(api: Any, namespace: str = "cpaas-system", *,
                             config: dict[str, Any] | None = None) -> None:
    """What every notifier reads, into a fake API server: the system namespace, the
    template and delivery CRDs, the shipped templates and katanomi-config (``config``,
    else the source document's)."""
    api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    api.load_yaml(CRD_FILE)
    api.load_yaml(DELIVERY_CRD)
    for doc in installed_templates():
        api.add(doc)
    api.add(config or seed_katanomi_config(namespace))
