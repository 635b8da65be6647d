"""A subscriber's groups come from the administrator's ConfigMap, never from the
subscription, and every access review carries them (plus ``system:authenticated``)."""

from __future__ import annotations

import pytest

from dev.support import factory
from subscription_filter.config import Config
from subscription_filter.rbac import (
    AUTHENTICATED,
    GroupDirectory,
    Target,
    parse_groups,
    review_body,
)

from .test_app import recipients, until

TARGET = Target("artifacts.katanomi.dev", "v1alpha1", "artifactpromotionruns", "devops", "r")


def groups_configmap(data: dict[str, str], name: str = "kubeevent-user-groups") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "cpaas-system"}, "data": data}


@pytest.mark.parametrize(("text", "groups"), [
    ("a,b", ("a", "b")),
    (" a , b\nc\n", ("a", "b", "c")),
    ("a,,a, b", ("a", "b")),
    ("", ()),
    ("\n,\n", ()),
])
def test_parse_groups(text: str, groups: tuple[str, ...]) -> None:
    assert parse_groups(text) == groups


def test_every_user_is_in_system_authenticated() -> None:
    directory = GroupDirectory(lambda: {"alice": "dev", "root": "system:authenticated,x"})
    assert directory.groups_of("alice") == ("dev", AUTHENTICATED)
    assert directory.groups_of("root") == (AUTHENTICATED, "x")
    assert directory.groups_of("nobody") == (AUTHENTICATED,)
    assert GroupDirectory(None).groups_of("alice") == (AUTHENTICATED,)
    assert GroupDirectory(lambda: None).groups_of("alice") == (AUTHENTICATED,)


def test_the_directory_is_read_again_after_its_ttl() -> None:
    now = [0.0]
    data = {"alice": "dev"}
    reads: list[int] = []

    def read() -> dict[str, str]:
        reads.append(1)
        return dict(data)

    directory = GroupDirectory(read, ttl=30, clock=lambda: now[0])
    assert directory.groups_of("alice") == ("dev", AUTHENTICATED)
    data["alice"] = "ops"
    now[0] = 29
    assert directory.groups_of("alice") == ("dev", AUTHENTICATED)
    now[0] = 31
    assert directory.groups_of("alice") == ("ops", AUTHENTICATED)
    assert len(reads) == 2


def test_a_user_review_names_the_groups() -> None:
    loaded = factory.seed_subscription()
    from subscription_filter.celengine import select
    from subscription_filter.subscriptions import Compiler

    subscription = Compiler(select("cel-expr")).load(loaded).subscription
    assert subscription is not None
    spec = review_body(subscription.subscriber, TARGET, groups=("dev", AUTHENTICATED))["spec"]
    assert spec["user"] == "admin" and spec["groups"] == ["dev", AUTHENTICATED]


def test_the_configmap_name_is_configurable_and_can_be_switched_off() -> None:
    def config(**env: str) -> Config:
        return Config.from_env({**factory.SIGNING_ENV, **env})

    assert config().groups_configmap == "kubeevent-user-groups"
    assert config(SUBSCRIBER_GROUPS_CONFIGMAP="people").groups_configmap == "people"
    assert config(SUBSCRIBER_GROUPS_CONFIGMAP="-").groups_configmap == ""
    assert config(SYSTEM_NAMESPACE="ops").system_namespace == "ops"


def test_reviews_carry_the_directorys_groups_not_the_subscriptions(api, make) -> None:
    claims = factory.cluster_subscription("carol", info={"groups": ["admins"]})
    api.add(claims)
    api.add(groups_configmap({"bob": "dev, qa"}))
    function = make()
    until(function.ready)
    run = factory.promotion_run(approvers=("admin", "bob", "carol"))
    recipients(function, "approvalpending", run)
    by_user = {r["spec"]["user"]: r["spec"].get("groups") for r in api.reviews}
    assert by_user["bob"] == ["dev", "qa", AUTHENTICATED]
    assert by_user["carol"] == [AUTHENTICATED], "what a subscription says is not trusted"
    assert by_user["admin"] == [AUTHENTICATED]


def test_no_directory_configured_reviews_the_user_alone(api, make) -> None:
    api.add(groups_configmap({"bob": "dev"}))
    function = make(SUBSCRIBER_GROUPS_CONFIGMAP="-")
    until(function.ready)
    recipients(function, "approvalpending", factory.promotion_run(approvers=("bob",)))
    (review,) = [r["spec"] for r in api.reviews if r["spec"].get("user") == "bob"]
    assert review["groups"] == [AUTHENTICATED]
