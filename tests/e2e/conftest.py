"""One whole chain per module: fake API server, WeCom sandbox, dev broker, three functions.

These suites run on the dev broker (dev/stack/broker.py), an imitation of Knative's kept
to what the manifests use; the same chain through Knative's own broker, controllers and
webhook is tests/cluster.

Starting the function processes is the slow part, so they start once; each test resets
the recordings, faults and policies it may have touched.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import Delivery, WeComSandbox
from dev.stack.stack import NOTIFIER, Stack, StackOptions
from dev.support.mailpit import Mailpit
from dev.support.mailpit import why_not as mailpit_missing
from dev.support.seed import example

APR = ("artifacts.katanomi.dev/v1alpha1", "ArtifactPromotionRun")
SUBSCRIPTION = ("core.katanomi.dev/v1alpha1", "ClusterSubscription")
REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
# A subscriber name that would make every seed CEL expression true if it were pasted
# into the expression text instead of being bound as data.
INJECTION = 'eve" || true || "'


def subscription(name: str, subscriber: str, *, owner: str | None = None,
                 namespace: str = "devops") -> dict[str, Any]:
    """The seed's ClusterSubscription for admin, for another subscriber."""
    obj = copy.deepcopy(yaml.safe_load(example("seed-clustersubscription-admin.yaml")))
    obj["metadata"]["name"] = name
    obj["metadata"]["annotations"]["katanomi.dev/owned.username"] = owner or subscriber
    obj["spec"]["subscriber"]["name"] = subscriber
    obj["spec"]["subscriber"]["info"] = {"id": f"id-{name}", "mail": f"{name}@example.com"}
    for entry in obj["spec"]["subscriptions"]:
        entry["object"]["namespace"] = namespace
    return obj


def corpwechat_users(**extra: str) -> dict[str, Any]:
    """The example user directory with more people in it (an administrator's ConfigMap)."""
    from dev.stack.manifests import DEVSTACK_EXAMPLES, load_yaml_file

    (doc,) = load_yaml_file(DEVSTACK_EXAMPLES / "corpwechat-users.yaml")
    doc["data"].update(extra)
    return doc


EXTRA_SUBSCRIPTIONS = [
    # every namespace (an empty namespace means all of them)
    subscription("frank-everywhere", "frank", namespace=""),
    # owned by someone else than its subscriber: never used
    subscription("dave-owned-by-carol", "dave", owner="carol"),
    subscription("eve-injection", INJECTION),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    options = StackOptions(
        kube="fake", wecom="sandbox", backoff_scale=0.01, delivery_timeout=10.0,
        workdir=tmp_path_factory.mktemp("e2e"),
        extra_objects=[*EXTRA_SUBSCRIPTIONS, corpwechat_users(frank="frank", dave="dave")],
        function_env={
            # one WeCom attempt per request: the broker's retries do the retrying; each
            # message alone however many a member gets (the tests count them; digests of
            # floods: tests/corpwechat_notifier/test_followups.py)
            NOTIFIER: {"CORPWECHAT_RETRY_ATTEMPTS": "1", "CORPWECHAT_TIMEOUT_SECONDS": "1",
                       "CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "0"},
        })
    with Stack(options) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(stack: Stack) -> Iterator[None]:
    yield
    assert stack.broker is not None and stack.sandbox is not None
    assert stack.kube_api is not None
    stack.wait_idle(30)
    stack.sandbox.release_hangs()
    stack.sandbox.wait_idle(10)
    stack.broker.reset()
    stack.sandbox.reset()
    if stack.mailpit is not None:
        stack.mailpit.clear()
    stack.kube_api.clear_faults()
    stack.kube_api.reset_policy()


@pytest.fixture
def kube(stack: Stack) -> FakeKubeAPI:
    assert stack.kube_api is not None
    return stack.kube_api


@pytest.fixture
def wecom(stack: Stack) -> WeComSandbox:
    assert stack.sandbox is not None
    return stack.sandbox


@pytest.fixture
def mail(stack: Stack) -> Mailpit:
    if stack.mailpit is None:
        pytest.fail(f"the dev stack has no SMTP server: {mailpit_missing()}")
    return stack.mailpit


def settle(stack: Stack) -> None:
    """Wait until the broker has nothing in flight and WeCom has answered everything."""
    assert stack.wait_idle(60), "the dev broker did not become idle"
    assert stack.sandbox is not None and stack.sandbox.wait_idle(10)


def received(wecom: WeComSandbox) -> dict[str, list[Delivery]]:
    """WeCom user id → the messages delivered to it."""
    by_user: dict[str, list[Delivery]] = {}
    for delivery in wecom.delivered:
        by_user.setdefault(delivery.userid, []).append(delivery)
    return by_user


def recipients(stack: Stack) -> list[list[str]]:
    """The subscriptions named in each notification request the broker carried."""
    assert stack.broker is not None
    return [sorted(r["subscription"] for r in (event.data or {}).get("recipients", []))
            for event in stack.broker.ingress if event["type"] == REQUESTED]


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (a state, not a duration)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
