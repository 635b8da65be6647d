"""A start that answers before every filter is compiled: the name lookup is known from
the scanner and the conditions that name the subscriber, a filter compiles when an event
first makes its subscription a candidate, the store checks the rest afterwards, and a
subscription is used only whole meanwhile. The FiltersCanMatch check reads from the API
server only the subscriptions it has something to write on."""

from __future__ import annotations

import threading
import time

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter import celparse, celtree, core, namelookup
from subscription_filter.binding import rewrite
from subscription_filter.celengine import Engine, select
from subscription_filter.index import build_snapshot
from subscription_filter.programs import Filter, Programs
from subscription_filter.shared.kube import Kube
from subscription_filter.store import SubscriptionStore
from subscription_filter.subscriptions import Compiler, first_compile_error

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
        made = Filter(source, {"name": "x"}, Programs(select("cel-expr")))
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
    # Nor is the error of the filter that does not compile reported as an evaluation's.
    doc = own(3)
    doc["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] += " && ce.data.x =="
    evaluated = Compiler(engine).load(doc, compile_now=False)
    result = core.match(build_snapshot([evaluated]).index, event, engine)
    assert (result.candidates, result.matched, result.errors) == (1, [], [])
    # Loaded alone (a watch event), the same object is refused at once, as ever.
    refused = Compiler(engine).load(own(3, broken="ce.data.object.status.phase == "))
    assert (refused.readiness.ready, refused.readiness.reason) == (False, "InvalidCEL")
    assert "spec.subscriptions[0].events[1].filter.cel: syntax error" in \
        refused.readiness.message


def two_of_their_own(i: int) -> dict:
    """``own(i)`` with an approved filter of its own too (a second index key)."""
    doc = own(i)
    doc["spec"]["subscriptions"][0]["events"].append(factory.subscription_event(
        "approved", f'ce.data.object.metadata.name != "y-{i}"'))
    return doc


def filters(loaded: list, event: int) -> list[Filter]:
    return [item.subscription.objects[0].events[event].cel for item in loaded]


def test_a_start_reads_no_filter_and_an_event_reads_only_its_keys(engine: Engine) -> None:
    compiler = Compiler(engine)
    loaded = [compiler.load(two_of_their_own(i), compile_now=False) for i in range(30)]
    assert all(item.readiness.ready for item in loaded)
    assert not any(f.is_read for f in filters(loaded, 0) + filters(loaded, 1))
    snapshot = build_snapshot(loaded)
    event = core.parse_enriched(factory.enriched_event(
        "approvalpending", obj=factory.promotion_run(approvers=("user4", "user21"))))
    result = core.match(snapshot.index, event, engine)
    assert [s.subscriber.name for s in result.matched] == ["user21", "user4"]
    assert result.candidates == 2
    # The approval key's filters were read to be placed; of the approved key's, only the
    # candidates' (a subscription is used whole: all its filters compiled first).
    assert all(f.is_read for f in filters(loaded, 0))
    assert [i for i, f in enumerate(filters(loaded, 1)) if f.is_read] == [4, 21]
    assert compiler.programs.compiled == 2 + 2  # each candidate's two texts, whole
    # A new snapshot (a watch event) keeps what was read: every approval entry by name.
    again = build_snapshot(loaded)
    approval = again.index.buckets(event.type, event.group, event.kind, event.namespace)
    assert sum(len(lookup.by_name) for b in approval for lookup in b.lookups.values()) == 30
    assert [i for i, f in enumerate(filters(loaded, 1)) if f.is_read] == [4, 21]


@pytest.mark.parametrize(("broken", "said"), [
    ('ce.data.x == "$(subscriber.info.phone)"', "spec.subscriber.info.phone is not set"),
    ("[" * 40 + "1" + "]" * 40, "brackets are nested 40 deep, over the limit of 32"),
])
def test_a_filter_that_cannot_be_read_is_never_placed(engine: Engine, broken: str,
                                                      said: str) -> None:
    compiler = Compiler(engine)
    doc = own(3)
    doc["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] = (
        APPROVER.strip() + " && " + broken)
    loaded = compiler.load(doc, compile_now=False)
    assert loaded.readiness.ready  # nothing read yet: nothing known against it
    event = core.parse_enriched(factory.enriched_event(
        "approvalpending", obj=factory.promotion_run(approvers=("user3",))))
    index = build_snapshot([loaded]).index
    result = core.match(index, event, engine)
    assert (result.matched, result.errors, result.candidates) == ([], [], 0)
    # What the store's check after a start says, and what a watch's load says at once.
    problem = first_compile_error(loaded.subscription.objects)
    refused = Compiler(engine).load(doc)
    assert (refused.readiness.ready, refused.readiness.reason) == (False, "InvalidCEL")
    assert problem is not None and problem.message == refused.readiness.message
    assert problem.message.startswith("spec.subscriptions[0].events[0].filter.cel: ")
    assert said in problem.message


def test_events_racing_to_a_key_nobody_placed_all_see_it_whole(engine: Engine) -> None:
    compiler = Compiler(engine)
    index = build_snapshot([compiler.load(own(i), compile_now=False)
                            for i in range(300)]).index
    event = core.parse_enriched(factory.enriched_event(
        "approvalpending", obj=factory.promotion_run(approvers=("user7", "user150"))))
    start = threading.Barrier(8)
    answers: list[tuple[list[str], int]] = []

    def one() -> None:
        start.wait()
        result = core.match(index, event, engine)
        answers.append(([s.subscriber.name for s in result.matched], result.candidates))

    racing = [threading.Thread(target=one) for _ in range(8)]
    for thread in racing:
        thread.start()
    for thread in racing:
        thread.join(30)
    assert answers == [(["user150", "user7"], 2)] * 8


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


def test_what_a_start_leaves_for_later_waits_while_a_request_is_matching() -> None:
    """Compiling the rest, the Ready writes after it and the FiltersCanMatch check all
    yield to requests: held in ``serving``, the store writes nothing; let go, it does."""
    with FakeKubeAPI() as api:
        api.add(own(1))
        api.add(own(2, broken="ce.data.object.status.phase == "))
        api.add(factory.cluster_subscription("zz", events=[factory.subscription_event(
            "ApprovalPending", APPROVER)]))
        store = SubscriptionStore(Kube(api.new_api_client().configuration),
                                  Compiler(select("cel-expr")))
        celtree.parser()  # built once per process: the checks take milliseconds now
        with store.serving():
            store.start()
            try:
                assert store.wait_ready(15)
                time.sleep(1.0)
                assert api.request_log("PATCH") == []
            except BaseException:
                store.stop()
                raise
        try:
            patched = until(lambda: {r.path.rpartition("/")[0].rpartition("/")[2]
                                     for r in api.request_log("PATCH")} >= {
                "user1-artifactpromotionrun-subscription",
                "user2-artifactpromotionrun-subscription",
                "zz-artifactpromotionrun-subscription"} or None)
            assert patched
        finally:
            store.stop()


def test_a_filter_that_fails_as_no_check_foresaw_fails_alone(engine: Engine) -> None:
    """Reading moved out of loading (whose catch-all says ``InvalidObject``): a reading
    that raises anything is that filter's compile error, kept, never a failed request."""

    class Hostile(dict):
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("no")

    broken = Filter('ce.data.x == "$(subscriber.name)"', Hostile(name="x"),
                    Programs(engine))
    for use in (broken.read, broken.program, broken.read):
        with pytest.raises(celparse.CelCompileError,
                           match="the filter cannot be read: RuntimeError"):
            use()
    assert broken.is_read


def test_work_left_for_later_waits_for_a_quiet_moment_but_not_for_ever(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a request it waits ``QUIET_SECONDS``, but at most ``YIELD_AT_MOST``; never
    served, it does not wait at all."""
    from subscription_filter import store as store_module

    monkeypatch.setattr(store_module, "QUIET_SECONDS", 60.0)
    monkeypatch.setattr(store_module, "YIELD_AT_MOST", 0.3)
    with FakeKubeAPI() as api:
        store = SubscriptionStore(Kube(api.new_api_client().configuration),
                                  Compiler(select("cel-expr")))
        started = time.monotonic()
        store._yield_to_requests()  # nothing served yet: no quiet to wait for
        assert time.monotonic() - started < 0.3
        with store.serving():
            pass
        started = time.monotonic()
        store._yield_to_requests()  # a request just ended: waits, but only so long
        assert 0.3 <= time.monotonic() - started < 60.0
