"""A start that answers before every filter is compiled: the name lookup is known from
the scanner and the conditions that name the subscriber, a filter compiles when an event
first makes its subscription a candidate, the store checks the rest afterwards, and a
subscription is used only whole meanwhile. The FiltersCanMatch check reads from the API
server only the subscriptions it has something to write on."""

from __future__ import annotations

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter import celparse, core, namelookup
from subscription_filter.binding import rewrite
from subscription_filter.celengine import Engine, select
from subscription_filter.index import build_snapshot
from subscription_filter.programs import Programs
from subscription_filter.shared.kube import Kube
from subscription_filter.store import SubscriptionStore
from subscription_filter.subscriptions import Compiler

from .test_app import until
from .test_lookup import KEYED, UNKEYED

CSUB = "core.katanomi.dev/v1alpha1"
APPROVER = factory.seed_subscription()["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"]
# Besides the lookup tests' filters: ``&&`` inside brackets, strings and comments, a
# top-level ``?:``, and conditions that do not parse on their own.
MORE = [
    'ce.data.p == "a && b" && "$(subscriber.name)" == ce.data.q',
    "ce.data.n > 1 // not && here\n && subscriber.name in ce.data.people",
    "ce.data.n > 1 ? subscriber.name in ce.data.people : false",
    "[1, 2].exists(x, x > 1 && x < 3) && ce.data.p == subscriber.name",
    "(ce.data.p == subscriber.name || ce.data.q == subscriber.name) && ce.data.n > 1",
    "ce.data.p == subscriber.name && (",
    "ce.data.p == && subscriber.name in ce.data.people",
    APPROVER.strip() + ' && ce.data.object.spec.target != "staging-7"',
]


@pytest.mark.parametrize("source", [s for s, _ in KEYED] + UNKEYED + MORE)
def test_the_lookup_known_without_a_full_parse_is_the_full_parses(source: str) -> None:
    expression = rewrite(source).expression
    try:
        expected = namelookup.name_key(celparse.parse(expression), expression)
    except celparse.CelCompileError:
        # Whatever lookup it gets, it is never used: it does not compile, so its
        # subscription is not (``Scope.sound``).
        made = Programs(select("cel-expr")).filter(expression)
        with pytest.raises(celparse.CelCompileError):
            made.program()
        return
    assert namelookup.lookup_key(expression) == expected


def own(i: int, *, broken: str = "") -> dict:
    """Subscriber ``user<i>``'s subscription: the seed's approval filter with a condition of
    its own (a text nobody else has), and a second event whose filter is ``broken``."""
    events = [factory.subscription_event(
        "approvalpending", APPROVER.strip() + f' && ce.data.object.metadata.name != "x-{i}"')]
    if broken:
        events.append(factory.subscription_event("approved", broken))
    return factory.cluster_subscription(f"user{i}", events=events)


@pytest.fixture(params=["cel-expr"])
def engine(request: pytest.FixtureRequest) -> Engine:
    from .conftest import make_engine

    return make_engine(request.param)


def test_only_the_filters_an_event_reaches_are_compiled(engine: Engine) -> None:
    compiler = Compiler(engine)
    loaded = [compiler.load(own(i), compile_now=False) for i in range(40)]
    assert all(item.readiness.ready for item in loaded)
    assert compiler.programs.compiled == 0
    snapshot = build_snapshot(loaded)
    run = factory.promotion_run(approvers=("user3", "user17"))
    event = core.parse_enriched(factory.enriched_event("approvalpending", obj=run))
    result = core.match(snapshot.index, event, engine)
    assert [s.subscriber.name for s in result.matched] == ["user17", "user3"]
    assert result.candidates == 2  # the name lookup, known before any compile
    assert compiler.programs.compiled == 2  # the two candidates' texts, nobody else's


def test_a_subscription_is_used_only_whole_before_its_filters_are_checked(
        engine: Engine) -> None:
    compiler = Compiler(engine)
    broken = compiler.load(own(3, broken="ce.data.object.status.phase == "),
                           compile_now=False)
    assert broken.readiness.ready  # not compiled yet: nothing known against it
    event = core.parse_enriched(factory.enriched_event(
        "approvalpending", obj=factory.promotion_run(approvers=("user3",))))
    assert core.match(build_snapshot([broken]).index, event, engine).matched == []
    # Loaded alone (a watch event), the same object is refused at once, as ever.
    refused = Compiler(engine).load(own(3, broken="ce.data.object.status.phase == "))
    assert (refused.readiness.ready, refused.readiness.reason) == (False, "InvalidCEL")
    assert "spec.subscriptions[0].events[1].filter.cel: syntax error" in \
        refused.readiness.message


def test_a_start_checks_every_filter_after_serving_and_says_which_do_not_compile() -> None:
    with FakeKubeAPI() as api:
        for i in range(6):
            api.add(own(i))
        api.add(own(9, broken="ce.data.object.status.phase == "))
        store = SubscriptionStore(Kube(api.new_api_client().configuration),
                                  Compiler(select("cel-expr")))
        store.start()
        try:
            assert store.wait_ready(15)
            name = "user9-artifactpromotionrun-subscription"

            def said() -> dict | None:
                conditions = (api.get_object(CSUB, "ClusterSubscription", name).get("status")
                              or {}).get("conditions") or []
                return next((c for c in conditions if c["type"] == "Ready"), None)

            ready = until(said)
            assert (ready["status"], ready["reason"]) == ("False", "InvalidCEL")
            assert name not in store.snapshot().subscriptions
            assert len(store.snapshot().subscriptions) == 6
            # Said once: never Ready=True first and then taken back.
            writes = [r for r in api.request_log("PATCH") if name in r.path]
            assert len(writes) == 1
        finally:
            store.stop()


def test_filters_can_match_reads_only_what_it_writes_on() -> None:
    """Sound subscriptions are checked from memory after a start: no GET each."""
    with FakeKubeAPI() as api:
        sound = [factory.cluster_subscription(f"user{i}") for i in range(8)]
        for doc in sound:
            doc.setdefault("status", {})  # their Ready written already, as after a start
        for doc in sound:
            api.add(doc)
        slip = factory.cluster_subscription("zz", events=[factory.subscription_event(
            "ApprovalPending", APPROVER)])  # capital letters: an event type never emitted
        api.add(slip)
        store = SubscriptionStore(Kube(api.new_api_client().configuration),
                                  Compiler(select("cel-expr")))
        store.start()
        try:
            assert store.wait_ready(15)
            name = slip["metadata"]["name"]

            def hinted() -> dict | None:
                conditions = (api.get_object(CSUB, "ClusterSubscription", name).get("status")
                              or {}).get("conditions") or []
                return next((c for c in conditions if c["type"] == "FiltersCanMatch"), None)

            assert until(hinted)["status"] == "False"
            read = {r.path.rpartition("/")[2] for r in api.request_log("GET", verb="get")
                    if "/clustersubscriptions/" in r.path}
            # The queue is worked in the list's order and zz is listed last: every sound
            # one was checked before it, and none was read.
            assert read == {name}
        finally:
            store.stop()
