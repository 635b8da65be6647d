"""The ClusterSubscription CRD accepts the documented examples and is structural."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.fakes.kube_api import FakeKubeAPI
from tests.support import factory, seed

CRD_PATH = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "clustersubscriptions.yaml"


def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text(encoding="utf-8"))


def version() -> dict[str, Any]:
    [served] = crd()["spec"]["versions"]
    return served


def to_json_schema(node: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema: ``nullable`` becomes a null
    type, ``x-kubernetes-*`` extensions go, and objects without
    preserve-unknown-fields get ``additionalProperties: false`` where they list
    properties (the API server prunes unknown fields; here they must fail)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("nullable", "format")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (node.get("type") == "object" and "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node):
        out["additionalProperties"] = False
    return out


def validator() -> jsonschema.Draft7Validator:
    schema = to_json_schema(version()["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def errors(doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator().iter_errors(doc)]


def test_names_scope_and_columns() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "clustersubscriptions.core.katanomi.dev"
    assert (spec["group"], spec["scope"]) == ("core.katanomi.dev", "Cluster")
    assert spec["names"]["kind"] == "ClusterSubscription"
    assert spec["names"]["plural"] == "clustersubscriptions"
    served = version()
    assert served["name"] == "v1alpha1" and served["served"] and served["storage"]
    assert served["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in served["additionalPrinterColumns"]}
    assert columns["Subscriber"] == ".spec.subscriber.name"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'


def test_the_seed_example_applies_unchanged() -> None:
    doc = yaml.safe_load(seed.example("seed-clustersubscription-admin.yaml"))
    assert doc["apiVersion"] == "core.katanomi.dev/v1alpha1"
    assert errors(doc) == []


def test_the_multi_namespace_variant_applies_once_it_has_an_api_version() -> None:
    doc = yaml.safe_load(seed.example("seed-clustersubscription-multi-namespace.yaml"))
    # As documented the block has no apiVersion (kubectl needs one); the rest is as
    # written: no subscriber, and `events:` holding only a comment (null).
    assert "apiVersion" not in doc
    assert doc["spec"]["subscriptions"][0]["events"] is None
    doc["apiVersion"] = "core.katanomi.dev/v1alpha1"
    assert errors(doc) == []


def test_generated_subscriptions_and_a_written_status_validate() -> None:
    doc = factory.cluster_subscription("alice", namespace=None, info={"id": 1, "extra": [1]})
    doc["status"] = {"observedGeneration": 2, "conditions": [{
        "type": "Ready", "status": "False", "reason": "InvalidCEL", "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 2}]}
    assert errors(doc) == []


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "subscriptions"), "not-a-list"),
    (("spec", "subscriber", "name"), 42),
    (("spec", "subscriptions", 0, "events", 0, "filter", "exact", "involvedobjectkind"),
     {"nested": True}),
    (("spec", "subscriptions", 0, "events", 0, "filter", "cel"), "x" * 5000),
    (("spec", "subscriptions", 0, "object", "namespaces"), ["a"]),
    (("status", "conditions"), [{"type": "Ready", "status": "Maybe"}]),
])
def test_wrong_shapes_are_refused(path: tuple[Any, ...], value: Any) -> None:
    doc = copy.deepcopy(factory.seed_subscription())
    node: Any = doc
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    assert errors(doc) != []


def _walk(node: Any, where: str = "") -> list[str]:
    """Structural-schema rules the API server enforces that JSON Schema does not."""
    problems: list[str] = []
    if isinstance(node, dict):
        if "properties" in node or "items" in node or "additionalProperties" in node:
            if "type" not in node:
                problems.append(f"{where or '/'}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties together")
        for key in ("properties",):
            for name, child in (node.get(key) or {}).items():
                problems += _walk(child, f"{where}/{name}")
        if isinstance(node.get("items"), dict):
            problems += _walk(node["items"], f"{where}[]")
        if isinstance(node.get("additionalProperties"), dict):
            problems += _walk(node["additionalProperties"], f"{where}{{}}")
    return problems


def test_the_schema_is_structural() -> None:
    schema = version()["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    assert _walk({"properties": {"a": {"properties": {}}}}) != []  # the check can fail


def test_the_fake_api_server_serves_it() -> None:
    with FakeKubeAPI(register_defaults=False) as fake:
        fake.load_yaml(CRD_PATH)
        rtype = fake.resource_type("core.katanomi.dev/v1alpha1", "ClusterSubscription")
        assert (rtype.plural, rtype.namespaced, rtype.has_status) == (
            "clustersubscriptions", False, True)
        stored = fake.add(factory.seed_subscription())
        assert stored["metadata"]["name"] == "admin-artifactpromotionrun-subscription"
