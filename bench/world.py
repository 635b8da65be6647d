"""The test doubles around the functions, and realistically sized objects.

Objects read from a real API server carry ``managedFields``, a last-applied
annotation and status conditions; an ArtifactPromotionRun of the seed's shape
is then a few KB to a few tens of KB. ``sized_promotion_run`` pads the factory's
object that way up to a given size, so the enriched event the benchmarks use is
about 20 KB.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from dev.fakes.kube_api import FakeKubeAPI
from dev.support.factory import promotion_run
from dev.support.sink import RecordingSink


def size_of(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _managed_entry(n: int) -> dict[str, Any]:
    fields = {f"f:field{n}x{i}": {".": {}, "f:name": {}, "f:kind": {}} for i in range(12)}
    return {
        "manager": f"artifactpromotionrun-controller-{n}",
        "operation": "Update",
        "apiVersion": "artifacts.katanomi.dev/v1alpha1",
        "time": "2026-11-28T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": fields},
        "subresource": "status",
    }


def sized_promotion_run(name: str = "my-promotion", namespace: str = "devops", *,
                        size: int = 17_000, **kwargs: Any) -> dict[str, Any]:
    """The factory's ArtifactPromotionRun grown to about ``size`` bytes of JSON."""
    obj = promotion_run(name, namespace, **kwargs)
    meta = obj["metadata"]
    meta["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
            {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "spec": obj["spec"]}),
    }
    obj["status"]["conditions"] = [
        {"type": t, "status": "True", "reason": t, "lastTransitionTime": "2026-11-28T10:00:00Z",
         "message": f"{t} since the promotion started"}
        for t in ("Ready", "Approved", "Pending", "Running")
    ]
    meta["managedFields"] = []
    while size_of(obj) < size:
        meta["managedFields"].append(_managed_entry(len(meta["managedFields"])))
    return obj


class World(ExitStack):
    """A fake API server and a recording broker, plus a kubeconfig for them."""

    def __init__(self) -> None:
        super().__init__()
        self.kube = FakeKubeAPI()
        self.broker = RecordingSink()
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-")
        self.kubeconfig = Path(self._tmp.name) / "kubeconfig"

    def __enter__(self) -> World:
        super().__enter__()
        self.enter_context(self.kube)
        self.enter_context(self.broker)
        self.callback(self._tmp.cleanup)
        self.kube.write_kubeconfig(self.kubeconfig)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return bool(super().__exit__(exc_type, exc, tb))

    def enricher_env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig), "BROKER_INGRESS_URL": self.broker.url}
