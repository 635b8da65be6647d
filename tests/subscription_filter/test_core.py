"""Pure logic with plain data: binding, loading and validation, the index, matching,
the reply, the status patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from dev.support import factory, seed
from dev.support.wire import event as plain_event
from shared.events import Event
from subscription_filter import binding, celparse, core
from subscription_filter.celengine import CelExprEngine, Engine, Program
from subscription_filter.conditions import condition_patch, ready_condition
from subscription_filter.index import Candidate, Index, build_snapshot
from subscription_filter.rbac import Target, review_body
from subscription_filter.shared.errors import BadRequest
from subscription_filter.subscriptions import Compiler, Readiness, channels_of

RUN = factory.promotion_run(requester="alice", approvers=("admin", "bob"))


def enriched(reason: str = "approvalpending", **kwargs: Any) -> core.Enriched:
    kwargs.setdefault("obj", RUN)
    return core.parse_enriched(factory.enriched_event(reason, **kwargs))


def subscriptions(engine: Engine, *docs: dict[str, Any]) -> Index:
    compiler = Compiler(engine)
    return build_snapshot(compiler.load(d) for d in docs).index


def people() -> list[dict[str, Any]]:
    return [factory.seed_subscription(), factory.cluster_subscription("bob"),
            factory.cluster_subscription("alice"), factory.cluster_subscription("carol")]


# ----------------------------------------------------------------------- binding


@pytest.mark.parametrize(("source", "expected"), [
    ('a == "$(subscriber.name)"', 'a == (__subscriber__["name"])'),
    ("a == '$(subscriber.name)'", 'a == (__subscriber__["name"])'),
    ('a == "x-$(subscriber.info.mail)!"', 'a == ("x-" + __subscriber__["info"]["mail"] + "!")'),
    ("a == $(subscriber.name)", 'a == (__subscriber__["name"])'),
    ('a == b"$(subscriber.name)"', 'a == b"$(subscriber.name)"'),
    ('a == "$(subscriber)"', 'a == "$(subscriber)"'),
    ('a == "$(other.name)"', 'a == "$(other.name)"'),
    ("// '$(subscriber.name)\na", "// '$(subscriber.name)\na"),
    ('r"\\$(subscriber.name)"', '("\\\\" + __subscriber__["name"])'),
    ('"\\\\$(subscriber.name)"', '("\\\\" + __subscriber__["name"])'),
    ('"\\$(subscriber.name)"', '"\\$(subscriber.name)"'),
    ('"""a"$(subscriber.name)"""', '("a\\"" + __subscriber__["name"])'),
    ('"unterminated $(subscriber.name)', '"unterminated $(subscriber.name)'),
])
def test_rewrite(source: str, expected: str) -> None:
    rewritten = binding.rewrite(source)
    assert rewritten.expression == expected
    # Its tokens, shared by the limits and the name lookup, are the expression's own.
    assert rewritten.tokens == tuple(binding.scan(expected))


@pytest.mark.parametrize("source", [
    "x$(subscriber.name)y", "r'$(subscriber.name)'b", 'f("$(subscriber.name)")//c\n"',
    "a'''$(subscriber.name)'''.size()", '$(subscriber.name)"open', "b'$(subscriber.name)'",
    '"$(subscriber.name)"&&"$(subscriber.info.mail)"', "$(subscriber.name)$(subscriber.name)",
])
def test_the_tokens_of_a_rewritten_text_are_those_it_scans_to(source: str) -> None:
    rewritten = binding.rewrite(source)
    assert rewritten.tokens == tuple(binding.scan(rewritten.expression))


def test_rewrite_reports_the_fields_once_in_order() -> None:
    rewritten = binding.rewrite(
        '"$(subscriber.name)" + $(subscriber.info.id) + "$(subscriber.name)"')
    assert rewritten.fields == ("name", "info.id")


def test_nothing_from_the_subscriber_reaches_the_expression_text() -> None:
    name = 'x" || true || "'
    sub = binding.subscriber_binding({"name": name})
    rewritten = binding.rewrite('ce.a == "$(subscriber.name)"')
    assert name not in rewritten.expression
    assert binding.resolve(sub, "name") == name


def test_scan_knows_literals_and_comments() -> None:
    tokens = list(binding.scan("f('a)' + \"b(\" // c(\n)"))
    kinds = [t.kind for t in tokens if t.kind != "char"]
    assert kinds == ["ident", "literal", "literal", "comment"]
    # Brackets count towards the nesting limit only outside literals and comments.
    deep = celparse.MAX_NESTING + 1
    celparse.check_limits("f('" + "(" * deep + "') // " + "[" * deep + "\n")
    celparse.check_limits("[{(" * (celparse.MAX_NESTING // 3) + "x" + ")}]" * 10)
    with pytest.raises(celparse.CelCompileError, match=f"nested {deep} deep"):
        celparse.check_limits("[" * deep + "x" + "]" * deep)


@pytest.mark.parametrize("text", [
    "", "a", "f('a)' + \"b(\" // c(\n)", "r'x\\' + b\"y\" + rb'''z'''", "'open", '"""open\n',
    "'a\\'b' // end", "$(subscriber.name) + $(other) + $", "x // no newline", "é😀 \t\r\n",
    "br'\\n' Rb\"\" bR''", "'\\", "a'b\ncd", "'''a\n'b'''",
])
def test_scan_tokens_rebuild_the_text_exactly(text: str) -> None:
    """``as_calls`` rebuilds an expression from its tokens: nothing may be lost or added."""
    assert "".join(t.text for t in binding.scan(text)) == text


@pytest.mark.parametrize("text", ["plain", 'q"uote', "back\\slash", "tab\tnl\ncr\r", "\x01\x7f",
                                  "é😀", ""])
def test_encode_then_decode_round_trips(text: str) -> None:
    literal = binding.encode(text)
    assert literal.startswith('"') and literal.endswith('"')
    assert binding.decode(literal[1:-1]) == text


@pytest.mark.parametrize("body", ["\\q", "\\x4", "\\ud800", "\\U00110000", "\\8", "\\", "\\09a"])
def test_decode_refuses_invalid_escapes(body: str) -> None:
    with pytest.raises(binding.BindingError):
        binding.decode(body)


def test_subscriber_binding_is_text() -> None:
    bound = binding.subscriber_binding({"name": "n", "info": {"id": 7, "vip": True, "x": None,
                                                               "tags": [1, "a"]}})
    assert bound == {"name": "n", "info": {"id": "7", "vip": "true", "tags": ["1", "a"]}}
    assert binding.resolve(bound, "info.id") == "7"
    with pytest.raises(binding.BindingError, match="not set"):
        binding.resolve(bound, "info.x")
    with pytest.raises(binding.BindingError, match="not a text field"):
        binding.resolve(bound, "info")


# ------------------------------------------------------------------ loading, status


def test_the_seed_subscription_is_ready(engine: Engine) -> None:
    loaded = Compiler(engine).load(factory.seed_subscription())
    assert loaded.readiness.ready and loaded.readiness.reason == "Ready"
    sub = loaded.subscription
    assert sub is not None
    assert sub.subscriber.as_json() == {
        "name": "admin", "kind": "User", "apiGroup": "rbac.authorization.k8s.io",
        "info": {"id": "21232f297a57a5a743894a0e4a801fc3", "mail": "admin@example.com"}}
    assert sub.channels == ("corpwechat",)
    [obj] = sub.objects
    assert (obj.group, obj.kind, obj.namespace) == ("artifacts.katanomi.dev",
                                                   "artifactpromotionrun", "devops")
    assert [r.type.split(".")[-2] for r in obj.events] == [
        "approvalpending", "approvaldenied", "running", "failed"]
    assert all(r.cel is not None for r in obj.events)
    assert dict(obj.events[0].exact) == {"involvedobjectgroup": "artifacts.katanomi.dev",
                                         "involvedobjectkind": "ArtifactPromotionRun"}


def test_the_multi_namespace_variant_is_not_ready_without_a_subscriber(engine: Engine) -> None:
    doc = yaml.safe_load(seed.example("seed-clustersubscription-multi-namespace.yaml"))
    loaded = Compiler(engine).load(doc)
    assert loaded.subscription is None
    assert (loaded.readiness.reason, loaded.readiness.message) == (
        "InvalidSpec", "spec.subscriber.name is required")


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split("/")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()
_EVENTS = "spec/subscriptions/0/events"


@pytest.mark.parametrize(("path", "value", "reason", "fragment"), [
    ("annotation:katanomi.dev/owned.username", "mallory", "OwnerMismatch", "is 'mallory'"),
    ("annotation:katanomi.dev/owned.username", _DELETE, "OwnerMismatch", "is missing"),
    ("annotation:core.katanomi.dev/sink.pluginclasses", " , ", "NoChannels",
     "names no notification channel"),
    ("annotation:core.katanomi.dev/sink.pluginclasses", _DELETE, "NoChannels",
     "names no notification channel"),
    ("spec/subscriber/kind", "ServiceAccount", "InvalidSpec", "User, Group"),
    ("spec/subscriber", None, "InvalidSpec", "spec.subscriber.name is required"),
    ("spec/subscriber", "kim", "InvalidSpec", "spec.subscriber must be an object"),
    ("spec/subscriptions/0/events", "approvalpending", "InvalidSpec", "events must be a list"),
    ("spec/subscriptions", [], "InvalidSpec", "at least one object"),
    ("spec/subscriptions/0/object/kind", "", "InvalidSpec", "needs kind and apiVersion"),
    ("spec/subscriptions/0/events", None, "InvalidSpec", "lists no event type"),
    (f"{_EVENTS}/0/type", "", "InvalidSpec", "events[0].type is required"),
    (f"{_EVENTS}/1/filter/exact", {"a": {"b": 1}}, "InvalidSpec", "exact.a must be text"),
    (f"{_EVENTS}/2/filter/cel", "ce.data ==", "InvalidCEL",
     "spec.subscriptions[0].events[2].filter.cel: syntax error"),
    (f"{_EVENTS}/3/filter/cel", 'ce.x == "$(subscriber.info.phone)"', "InvalidCEL",
     "spec.subscriber.info.phone is not set"),
    (f"{_EVENTS}/3/filter/cel", "nosuchvar == 1", "InvalidCEL", "undeclared reference"),
    (f"{_EVENTS}/3/filter/cel", "nosuchfunction(1) == 1", "InvalidCEL",
     "'nosuchfunction'"),  # cel-cpp leaves out "function"
])
def test_what_makes_a_subscription_unusable(engine: Engine, path: str, value: Any, reason: str,
                                            fragment: str) -> None:
    if path.startswith("annotation:"):
        doc = _annotation(path.removeprefix("annotation:"), value)
    else:
        doc = _with(factory.seed_subscription(), path, value)
    loaded = Compiler(engine).load(doc)
    assert loaded.subscription is None
    assert loaded.readiness.reason == reason
    assert fragment in loaded.readiness.message
    assert loaded.readiness.generation is None or isinstance(loaded.readiness.generation, int)


def _annotation(key: str, value: Any) -> dict[str, Any]:
    doc = factory.seed_subscription()
    if value is _DELETE:
        doc["metadata"]["annotations"].pop(key)
    else:
        doc["metadata"]["annotations"][key] = value
    return doc


def test_channels_annotation() -> None:
    key = "core.katanomi.dev/sink.pluginclasses"
    assert channels_of({key: "wechat, CorpWeChat,email,,corpwechat"}) == (
        "wechat", "corpwechat", "email")
    assert channels_of({}) == ()


class CountingEngine:
    """The real engine, counting compilations."""

    def __init__(self) -> None:
        self.inner = CelExprEngine()
        self.name = "counting"
        self.compiled: list[str] = []

    def compile(self, expression: str) -> Program:
        self.compiled.append(expression)
        return self.inner.compile(expression)

    def compile_values(self, expression: str) -> Any:
        return self.inner.compile_values(expression)

    def value(self, plain_value: Any) -> Any:
        return self.inner.value(plain_value)



def test_each_expression_compiles_once_per_generation() -> None:
    counting = CountingEngine()
    compiler = Compiler(counting)
    doc = factory.seed_subscription()
    doc["metadata"].update(uid="u-1", generation=1)
    # The seed's four filters are three texts: two of its events share one filter.
    sources = [e["filter"]["cel"] for e in doc["spec"]["subscriptions"][0]["events"]]
    assert (len(sources), len(set(sources))) == (4, 3)
    first = compiler.load(doc)
    assert len(counting.compiled) == 3
    assert len(compiler.programs) == 3
    # A status or annotation change keeps the generation: nothing is compiled again.
    doc["status"] = {"conditions": []}
    assert compiler.load(doc).subscription == first.subscription
    doc["metadata"]["annotations"]["katanomi.dev/owned.username"] = "mallory"
    assert compiler.load(doc).readiness.reason == "OwnerMismatch"
    doc["metadata"]["annotations"]["katanomi.dev/owned.username"] = "admin"
    assert compiler.load(doc).readiness.ready
    assert len(counting.compiled) == 3
    # A new generation (or a re-created object with a new uid) compiles the subscription
    # again, but its filters' texts did not change: their programs are reused.
    doc["metadata"]["generation"] = 2
    compiler.load(doc)
    doc["metadata"]["uid"] = "u-2"
    compiler.load(doc)
    assert len(counting.compiled) == 3


def status_patch(obj: dict[str, Any], readiness: Readiness, now: str) -> dict[str, Any] | None:
    return condition_patch(obj, ready_condition(readiness), now)


def test_status_patch_only_when_it_changes() -> None:
    obj: dict[str, Any] = {"metadata": {"generation": 3}}
    ready = Readiness(True, "Ready", "4 event filters", 3)
    patch = status_patch(obj, ready, "2026-01-01T00:00:00Z")
    assert patch == {"status": {"observedGeneration": 3, "conditions": [{
        "type": "Ready", "status": "True", "reason": "Ready", "message": "4 event filters",
        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3}]}}
    obj["status"] = patch["status"]
    assert status_patch(obj, ready, "2026-02-02T00:00:00Z") is None
    # Same status, new message: the transition time stays.
    changed = status_patch(obj, Readiness(True, "Ready", "5 event filters", 4), "2026-03-03")
    assert changed is not None
    assert changed["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    # A flip moves it; other conditions are kept.
    obj["status"]["conditions"].insert(0, {"type": "Other", "status": "True"})
    flipped = status_patch(obj, Readiness(False, "OwnerMismatch", "m", 3), "2026-04-04")
    assert flipped is not None
    assert [c["type"] for c in flipped["status"]["conditions"]] == ["Other", "Ready"]
    assert flipped["status"]["conditions"][1]["lastTransitionTime"] == "2026-04-04"
    # The list is replaced whole: guarded by the version it was worked out from.
    obj["metadata"]["resourceVersion"] = "41"
    guarded = status_patch(obj, Readiness(True, "Ready", "6 event filters", 3), "2026-05-05")
    assert guarded is not None and guarded["metadata"] == {"resourceVersion": "41"}


# ---------------------------------------------------------------------------- index


def entries(index: Index, *key: str) -> list[Candidate]:
    """Every entry the index holds for ``key``, in name lookups or not, in order."""
    found = [c for bucket in index.buckets(*key)
             for group in (*(v for lk in bucket.lookups.values() for v in lk.by_name.values()),
                           *bucket.others.values()) for c in group]
    return sorted(found, key=lambda c: (c.subscription.name, c.entry))


def test_index_by_type_group_kind_and_namespace(engine: Engine) -> None:
    everywhere = factory.cluster_subscription("dave", namespace=None)
    elsewhere = factory.cluster_subscription("erin", namespace="devops-2")
    index = subscriptions(engine, *people(), everywhere, elsewhere)
    pending = factory.KUBEEVENT.format("approvalpending")
    group = "artifacts.katanomi.dev"
    names = [c.subscription.subscriber.name
             for c in entries(index, pending, group, "ArtifactPromotionRun", "devops")]
    assert names == ["admin", "alice", "bob", "carol", "dave"]
    names = [c.subscription.subscriber.name
             for c in entries(index, pending, group.upper(), "artifactpromotionrun", "devops-2")]
    assert names == ["dave", "erin"]
    cluster_scoped = entries(index, pending, group, "ArtifactPromotionRun", "")
    assert [c.subscription.subscriber.name for c in cluster_scoped] == ["dave"]
    assert entries(index, pending, "other.group", "ArtifactPromotionRun", "devops") == []
    assert entries(index, pending + ".x", group, "ArtifactPromotionRun", "devops") == []
    assert len(index) == 6 * 4


def test_an_event_touches_only_its_candidates(engine: Engine) -> None:
    many = [factory.cluster_subscription(f"user{i}", namespace=f"ns-{i}") for i in range(60)]
    index = subscriptions(engine, *many)
    event = enriched("approvaldenied", obj=factory.promotion_run(namespace="ns-7",
                                                                 requester="user7"))
    result = core.match(index, event, engine)
    assert result.candidates == 1
    assert [s.subscriber.name for s in result.matched] == ["user7"]


# ------------------------------------------------------------------------- matching


@pytest.mark.parametrize(("reason", "message", "expected"), [
    ("approvalpending", None, ["admin", "bob"]),
    ("approvaldenied", None, ["alice"]),
    ("running", None, ["alice"]),
    ("running", "step 2 of 3", []),
    ("failed", None, ["alice"]),
])
def test_the_seed_rules(engine: Engine, reason: str, message: str | None,
                        expected: list[str]) -> None:
    index = subscriptions(engine, *people())
    result = core.match(index, enriched(reason, message=message), engine)
    assert [s.subscriber.name for s in result.matched] == expected
    # Only the subscribers the event names are evaluated: the approvers, or the requester.
    assert result.candidates == (2 if reason == "approvalpending" else 1)
    assert result.errors == []


def test_namespaces(engine: Engine) -> None:
    index = subscriptions(engine, factory.cluster_subscription("alice"),
                          factory.cluster_subscription("dave", namespace=None),
                          factory.cluster_subscription("erin", namespace=""))
    for namespace, expected in (("devops", ["alice", "dave", "erin"]),
                                ("devops-2", ["dave", "erin"])):
        run = factory.promotion_run(namespace=namespace, requester="alice")
        everyone = core.match(index, enriched("failed", obj=run), engine)
        assert everyone.candidates == (1 if "alice" in expected else 0)
        for name in expected:
            run = factory.promotion_run(namespace=namespace, requester=name)
            matched = core.match(index, enriched("failed", obj=run), engine).matched
            assert [s.subscriber.name for s in matched] == [name]


def test_exact_filters_on_attributes_and_extensions(engine: Engine) -> None:
    rule = factory.subscription_event("failed", "true", exact={
        "involvedobjectkind": "ArtifactPromotionRun", "eventtype": "Warning"})
    index = subscriptions(engine, factory.cluster_subscription("alice", events=[rule]))
    assert core.match(index, enriched("failed"), engine).matched == []
    event = factory.enriched_event("failed", obj=RUN)
    event["eventtype"] = "Warning"
    assert len(core.match(index, core.parse_enriched(event), engine).matched) == 1
    other = factory.subscription_event("failed", exact={"source": "/elsewhere"})
    index = subscriptions(engine, factory.cluster_subscription("alice", events=[other]))
    assert core.match(index, core.parse_enriched(event), engine).matched == []


def test_a_subscription_is_named_once_however_many_entries_match(engine: Engine) -> None:
    rules = [factory.subscription_event("failed", "true"),
             factory.subscription_event("failed", '"$(subscriber.name)" == "alice"')]
    doc = factory.cluster_subscription("alice", events=rules)
    doc["spec"]["subscriptions"].append(copy.deepcopy(doc["spec"]["subscriptions"][0]))
    doc["spec"]["subscriptions"][1]["object"]["namespace"] = ""
    index = subscriptions(engine, doc)
    result = core.match(index, enriched("failed"), engine)
    assert result.candidates == 4
    assert [s.name for s in result.matched] == ["alice-artifactpromotionrun-subscription"]


def test_an_evaluation_error_is_no_match_and_is_reported(engine: Engine) -> None:
    broken = factory.cluster_subscription("alice", events=[
        factory.subscription_event("failed", "ce.data.object.spec.nothing.here == 1")])
    index = subscriptions(engine, broken, factory.cluster_subscription("bob", events=[
        factory.subscription_event("failed", "true")]))
    result = core.match(index, enriched("failed"), engine)
    assert [s.subscriber.name for s in result.matched] == ["bob"]
    [error] = result.errors
    assert error.subscription == "alice-artifactpromotionrun-subscription"
    assert error.where == "spec.subscriptions[0].events[0]"


def test_one_bad_subscription_does_not_affect_another(engine: Engine) -> None:
    bad = factory.cluster_subscription("alice", name="alice-bad", events=[
        factory.subscription_event("failed", "ce.data ==")])
    compiler = Compiler(engine)
    snapshot = build_snapshot(compiler.load(d) for d in (bad, *people()))
    assert not snapshot.readiness["alice-bad"].ready
    assert "alice-bad" not in snapshot.subscriptions
    result = core.match(snapshot.index, enriched("failed"), engine)
    assert [s.name for s in result.matched] == ["alice-artifactpromotionrun-subscription"]


def test_injection_through_the_subscriber_name(engine: Engine) -> None:
    evil = 'x" || true || "'
    doc = factory.cluster_subscription(evil, name="evil")
    index = subscriptions(engine, doc, *people())
    for reason in ("approvalpending", "approvaldenied", "running", "failed"):
        names = [s.name for s in core.match(index, enriched(reason), engine).matched]
        assert "evil" not in names
    odd_run = factory.promotion_run(approvers=(evil,), requester=evil)
    for reason in ("approvalpending", "approvaldenied"):
        names = [s.name for s in core.match(index, enriched(reason, obj=odd_run),
                                            engine).matched]
        assert names == ["evil"]


# ------------------------------------------------------------------- input and reply


def test_parse_enriched() -> None:
    parsed = enriched("running")
    assert (parsed.group, parsed.version, parsed.kind, parsed.name, parsed.namespace) == (
        "artifacts.katanomi.dev", "v1alpha1", "ArtifactPromotionRun", "my-promotion", "devops")
    assert parsed.api_version == "artifacts.katanomi.dev/v1alpha1"
    ce = parsed.ce()
    assert ce["involvedobjectkind"] == "ArtifactPromotionRun" and ce["specversion"] == "1.0"
    assert ce["data"]["object"]["metadata"]["name"] == "my-promotion"


def _event(**changes: Any) -> Event:
    event = factory.enriched_event("failed", obj=RUN)
    attrs = dict(event.attributes)
    data = changes.pop("data", event.data)
    for key, value in changes.items():
        if value is None:
            attrs.pop(key, None)
        else:
            attrs[key] = value
    return plain_event(attrs, data)


@pytest.mark.parametrize(("event", "fragment"), [
    (_event(type="dev.knative.apiserver.resource.add"), "unsupported event type"),
    (_event(involvedobjectkind=None), "extension 'involvedobjectkind' is missing"),
    (_event(involvedobjectname=""), "extension 'involvedobjectname' is missing"),
    (_event(data=["not", "an", "object"]), "must be a JSON object"),
    (_event(data={"object": {}}), "data.event must be"),
    (_event(data={"event": {}, "object": "x"}), "data.object must be"),
    (_event(data=b"{not json"), "not valid JSON"),
])
def test_bad_input_is_refused(event: Event, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        core.parse_enriched(event)
    assert fragment in info.value.reason


def test_data_nested_too_deep_is_refused() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(BadRequest, match="nested deeper"):
        core.parse_enriched(_event(data={"event": {}, "object": deep}))


def test_notification_request(engine: Engine) -> None:
    index = subscriptions(engine, *people())
    event = factory.enriched_event("approvalpending", obj=RUN, id="in-1")
    parsed = core.parse_enriched(event)
    matched = core.match(index, parsed, engine).matched
    (reply,) = core.notifications(event, list(reversed(matched)))
    (again,) = core.notifications(event, matched)
    assert reply["type"] == core.NOTIFICATION_TYPE
    assert reply["id"] == again["id"] != "in-1"
    assert reply["source"] == core.NOTIFICATION_SOURCE
    assert reply["involvedobjectname"] == "my-promotion"
    assert reply["eventreason"] == "approvalpending"
    (other,) = core.notifications(
        factory.enriched_event("approvalpending", obj=RUN, id="in-2"), matched)
    assert other["id"] != reply["id"]
    data = reply.data
    assert data["event"]["id"] == "in-1" and data["event"]["type"] == event["type"]
    assert data["event"]["data"]["object"]["metadata"]["name"] == "my-promotion"
    assert data["recipients"] == [
        {"subscription": "admin-artifactpromotionrun-subscription",
         "subscriber": {"name": "admin", "kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                        "info": {"id": "21232f297a57a5a743894a0e4a801fc3",
                                 "mail": "admin@example.com"}},
         "channels": ["corpwechat"]},
        {"subscription": "bob-artifactpromotionrun-subscription",
         "subscriber": {"name": "bob", "kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                        "info": factory.cluster_subscription("bob")["spec"]["subscriber"]["info"]},
         "channels": ["corpwechat"]},
    ]


def test_review_body() -> None:
    target = Target("artifacts.katanomi.dev", "v1alpha1", "artifactpromotionruns", "devops",
                    "run-1")
    user = Compiler(CelExprEngine()).load(factory.seed_subscription()).subscription
    assert user is not None
    assert review_body(user.subscriber, target) == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "admin", "resourceAttributes": {
            "group": "artifacts.katanomi.dev", "version": "v1alpha1",
            "resource": "artifactpromotionruns", "namespace": "devops", "name": "run-1",
            "verb": "get"}}}
    group = Compiler(CelExprEngine()).load(
        factory.cluster_subscription("team-a", subscriber_kind="Group")).subscription
    assert group is not None
    cluster = Target("", "v1", "nodes", "", "node-1")
    assert review_body(group.subscriber, cluster)["spec"] == {
        "groups": ["team-a"], "resourceAttributes": {
            "group": "", "version": "v1", "resource": "nodes", "name": "node-1",
            "verb": "get"}}
