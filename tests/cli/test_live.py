"""``simulate --kubeconfig``: the object and SubjectAccessReviews from a (fake) API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support.procs import free_port
from tests.cli.conftest import Case
from tests.cli.support import PLATFORM_URL, TEMPLATES, by_name, run

ADMIN = "admin-artifactpromotionrun-subscription"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


def live(case: Case, kubeconfig: Path, *extra: str) -> list[str | Path]:
    return ["simulate", "--json", "--event", case.event, "--subscriptions", case.subscriptions,
            "--templates", TEMPLATES, "--platform-url", PLATFORM_URL,
            "--kubeconfig", kubeconfig, *extra]


def test_the_object_is_read_from_the_cluster(api: FakeKubeAPI, pending: Case,
                                             tmp_path: Path) -> None:
    api.add(pending.obj)
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    payload = run(*live(pending, kubeconfig)).json()
    assert payload["event"]["object_from"] == "read from the cluster"
    assert [r["subscription"] for r in payload["recipients"]] == [ADMIN]
    reads = api.request_log("GET", "/apis/artifacts.katanomi.dev/v1alpha1/namespaces/devops/"
                                   "artifactpromotionruns/my-promotion")
    assert len(reads) == 1
    assert api.reviews == []  # --rbac defaults to allow: no review is asked


def test_subject_access_reviews_decide_with_rbac_live(api: FakeKubeAPI, pending: Case,
                                                      tmp_path: Path) -> None:
    api.add(pending.obj)
    api.deny(user="admin", namespace="devops")
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    payload = run(*live(pending, kubeconfig, "--rbac", "live")).json()
    admin = by_name(payload)[ADMIN]
    assert admin["match"] is False
    assert admin["reason"]["check"] == "rbac"
    assert "denied by SubjectAccessReview" in admin["reason"]["message"]
    [review] = api.reviews
    assert review["spec"]["user"] == "admin"
    assert review["spec"]["resourceAttributes"] == {
        "group": "artifacts.katanomi.dev", "version": "v1alpha1",
        "resource": "artifactpromotionruns", "namespace": "devops", "name": "my-promotion",
        "verb": "get"}
    api.reset_policy()
    allowed = by_name(run(*live(pending, kubeconfig, "--rbac", "live")).json())[ADMIN]
    assert allowed["match"] is True
    assert allowed["rbac"]["reason"].startswith("allowed by SubjectAccessReview")


def test_a_missing_object_is_null_as_the_enricher_sends_it(api: FakeKubeAPI, pending: Case,
                                                           tmp_path: Path) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    payload = run(*live(pending, kubeconfig)).json()
    assert payload["event"]["object_from"].startswith("not found in the cluster")
    assert by_name(payload)[ADMIN]["reason"]["check"] == "cel-error"


def test_an_unreachable_cluster_is_one_line(api: FakeKubeAPI, pending: Case,
                                            tmp_path: Path) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    port = free_port()  # nobody listens there, and no outgoing connection takes it
    text = kubeconfig.read_text(encoding="utf-8").replace(f":{api.port}", f":{port}")
    kubeconfig.write_text(text, encoding="utf-8")
    run(*live(pending, kubeconfig)).assert_user_error(
        "--kubeconfig: cannot read the involved object:", "unreachable")
