"""What CEL filters answer, evaluated by the filter's engine (cel-expr): the seed's
filters, standard functions, errors, placeholders, limits, threads."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dev.support import factory
from subscription_filter.celengine import CelExprEngine, select
from subscription_filter.celparse import (
    MAX_DEPTH,
    MAX_EXPRESSION_BYTES,
    MAX_LOGICAL,
    MAX_NESTING,
    MAX_UNARY_RUN,
    CelCompileError,
)

from .conftest import outcome

SEED = factory.seed_subscription()
SEED_CEL = {e["type"].split(".")[-2]: e["filter"]["cel"]
            for e in SEED["spec"]["subscriptions"][0]["events"]}
RUN = factory.promotion_run(requester="alice", approvers=("admin", "bob"))
ADMIN = {"name": "admin", "kind": "User", "info": {"id": "21232f", "mail": "admin@example.com"}}
ALICE = {"name": "alice", "kind": "User", "info": {"mail": "alice@example.com"}}
STRANGER = {"name": "carol", "kind": "User"}
INJECTION = {"name": 'x" || true || "'}


def ce(reason: str = "approvalpending", *, message: str | None = None,
       obj: dict[str, Any] | None = None) -> dict[str, Any]:
    return factory.as_json(factory.enriched_event(reason, obj=obj or RUN, message=message))


def test_the_seed_has_four_filters() -> None:
    assert sorted(SEED_CEL) == ["approvaldenied", "approvalpending", "failed", "running"]
    assert all("$(subscriber.name)" in source for source in SEED_CEL.values())


@pytest.mark.parametrize(("reason", "message", "expected"), [
    ("approvalpending", None, {"admin": "true", "alice": "false", "carol": "false"}),
    ("approvaldenied", None, {"admin": "false", "alice": "true", "carol": "false"}),
    ("running", None, {"admin": "false", "alice": "true", "carol": "false"}),
    ("running", "PromotionRunning: step 2", {"admin": "false", "alice": "false",
                                             "carol": "false"}),
    ("failed", None, {"admin": "false", "alice": "true", "carol": "false"}),
])
def test_seed_expressions(engine, reason, message, expected) -> None:
    event = ce(reason, message=message)
    got = {sub["name"]: outcome(engine, SEED_CEL[reason], event, sub)
           for sub in (ADMIN, ALICE, STRANGER)}
    assert got == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("!has(ce.data.event.message)", "true"),
    ("has(ce.data.event.message)", "false"),
    ("has(ce.data.event.reason)", "true"),
    ("!has(ce.data.object.metadata.labels.app)", "false"),
    ("!has(ce.data.object.metadata.labels.tier)", "true"),
    ("has(ce.involvedobjectkind)", "true"),
    ("has(ce.subject)", "false"),
])
def test_has_on_present_and_missing_keys(engine, source, expected) -> None:
    assert outcome(engine, source, ce("running")) == expected


def test_has_sees_a_message_that_is_present(engine) -> None:
    assert outcome(engine, "!has(ce.data.event.message)", ce("running", message="x")) == "false"


@pytest.mark.parametrize(("source", "expected"), [
    ('ce.type == "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.failed.v1alpha1"',
     "true"),
    ('ce.involvedobjectnamespace == "devops" && ce.eventreason == "failed"', "true"),
    ('ce.specversion == "1.0" && ce.datacontenttype == "application/json"', "true"),
    ('ce.data.object.metadata.name.startsWith("my-")', "true"),
    ('ce.data.object.status.phase in ["Pending", "Running"]', "true"),
    ("size(ce.data.object.status.artifactPromotionSpec.approvalSpec.users) == 2", "true"),
    ('ce.data.object.status.artifactPromotionSpec.approvalSpec.users'
     '.all(u, u.kind == "User")', "true"),
    ('ce.data.object.status.artifactPromotionSpec.approvalSpec.users'
     '.filter(u, u.name != "admin").map(u, u.name) == ["bob"]', "true"),
    ('ce.data.object.metadata.name.matches("^my-[a-z]+$")', "true"),
    ("ce.data.event.count == 1", "true"),
    ("ce.data.event.count == 1.0", "true"),
    ("ce.data.event.count < 1.5", "true"),
    ("ce.data.event.count > 2", "false"),
    ('type(ce.data) == map && type(ce.id) == string', "true"),
    ('ce.data.object.status.triggeredBy.user.name == "alice" ? true : false', "true"),
])
def test_attributes_data_and_standard_functions(engine, source, expected) -> None:
    assert outcome(engine, source, ce("failed")) == expected


@pytest.mark.parametrize(("value", "source", "expected"), [
    (2.0, "ce.data.n == 2", "true"),
    (2.5, "ce.data.n > 2", "true"),
    (2**70, "ce.data.n > 1.0", "true"),
    (7, "ce.data.n % 2 == 1", "true"),
    (True, "ce.data.n == true", "true"),
    (None, "ce.data.n == null", "true"),
])
def test_json_numbers_and_scalars_agree(engine, value, source, expected) -> None:
    assert outcome(engine, source, {"data": {"n": value}}) == expected


@pytest.mark.parametrize("source", [
    "ce.data ==",
    "ce.data.x == 'unterminated",
    "cee.data.x == 1",
    "ce.data.frobnicate()",
    "frobnicate(ce)",
    "ce.data.x == $(subscriber.nope)",
    '"$(subscriber.info)" == "x"',
    "",
    "   ",
])
def test_compile_errors(engine, source) -> None:
    assert outcome(engine, source, ce(), ADMIN) == "compile-error"


@pytest.mark.parametrize("source", [
    'ce.data.nope.x == "a"',
    'ce.data.object.status.artifactPromotionSpec.approvalSpec.users[5].name == "a"',
    "ce.data.event.count / 0 == 1",
    "ce.data.event.count",
    "ce.data.event.reason",
])
def test_evaluation_errors_and_non_bool_results(engine, source) -> None:
    assert outcome(engine, source, ce()) == "eval-error"


@pytest.mark.parametrize("source", ["1 + 1", '"text"', "[true]"])
def test_a_known_non_bool_type_never_matches(engine, source) -> None:
    # cel-expr's type checker refuses it when compiling.
    assert outcome(engine, source, ce()) in {"compile-error", "eval-error"}


@pytest.mark.parametrize(("source", "expected"), [
    ('ce.data.nope.x == "a" || true', "true"),
    ('true || ce.data.nope.x == "a"', "true"),
    ('ce.data.nope.x == "a" && false', "false"),
])
def test_errors_are_absorbed_by_logical_operators(engine, source, expected) -> None:
    assert outcome(engine, source, ce()) == expected


# ------------------------------------------------------------------ subscriber binding


@pytest.mark.parametrize("source", [
    '"$(subscriber.name)" == "admin"',
    "'$(subscriber.name)' == 'admin'",
    '$(subscriber.name) == "admin"',
    '"""$(subscriber.name)""" == "admin"',
    'r"$(subscriber.name)" == "admin"',
    '"team-$(subscriber.name)-x" == "team-admin-x"',
    '"$(subscriber.name)@$(subscriber.info.id)" == "admin@21232f"',
    '"$(subscriber.info.mail)" == ce.data.mail',
    '"say \\"hi\\" to\\t$(subscriber.name)\\n" == "say \\"hi\\" to\\tadmin\\n"',
    '"\\u00e9\\x41\\101-$(subscriber.name)" == "éAA-admin"',
    "subscriber.name == \"admin\" && subscriber.info.mail == 'admin@example.com'",
    '"$(subscriber.kind)" == "User"',
])
def test_placeholders_are_bound(engine, source) -> None:
    assert outcome(engine, source, {"data": {"mail": "admin@example.com"}}, ADMIN) == "true"


@pytest.mark.parametrize("source", [
    'b"$(subscriber.name)" == b"$(subscriber.name)"',
    '"\\$(subscriber.name)" == "x"',
    "ce.data.x == 1 // it's \"$(subscriber.name)\" in a comment",
])
def test_placeholders_only_inside_string_literals_and_code(engine, source) -> None:
    # bytes literals and comments keep the text; an escaped $ is an invalid escape.
    result = outcome(engine, source, {"data": {"x": 1}}, ADMIN)
    assert result == {"b": "true", "\"": "compile-error", "c": "true"}[source[0]]


def test_a_subscriber_name_is_data_not_code(engine) -> None:
    approver = SEED_CEL["approvalpending"]
    requester = SEED_CEL["approvaldenied"]
    event = ce("approvalpending")
    assert outcome(engine, approver, event, INJECTION) == "false"
    assert outcome(engine, requester, ce("approvaldenied"), INJECTION) == "false"
    # ... and the same odd name matches where it really is an approver.
    odd = factory.promotion_run(approvers=("admin", INJECTION["name"]))
    assert outcome(engine, approver, ce(obj=odd), INJECTION) == "true"
    assert outcome(engine, approver, ce(obj=odd), ADMIN) == "true"


@pytest.mark.parametrize("name", [
    'x") || true || ("', "x' || true || '", "x\\\" || true || \\\"", "$(subscriber.name)",
    "a\nb", "// comment", "é😀",
])
def test_odd_subscriber_names_only_ever_equal_themselves(engine, name) -> None:
    subscriber = {"name": name}
    assert outcome(engine, '"$(subscriber.name)" == ce.data.name', {"data": {"name": name}},
                   subscriber) == "true"
    assert outcome(engine, '"$(subscriber.name)" == ce.data.name', {"data": {"name": "x"}},
                   subscriber) == "false"


# ------------------------------------------------------------------ absurd expressions


def chain(op: str, n: int, term: str = "true") -> str:
    return f" {op} ".join([term] * n)


@pytest.mark.parametrize(("source", "fragment"), [
    ("ce.x == " + '"' + "a" * MAX_EXPRESSION_BYTES + '"', "bytes"),
    ("(" * (MAX_NESTING + 1) + "true" + ")" * (MAX_NESTING + 1), "nested"),
    ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + " == []", "nested"),
    ("ce" + ".a" * MAX_DEPTH + " == 1", "deep"),
    ("1" + " + 1" * MAX_DEPTH + " == 2", "deep"),
    ("size(" * 20 + "ce" + ".a" * 20 + ")" * 20 + " == 1", "deep"),
    (chain("||", MAX_LOGICAL + 2, "false"), "&& and || operators"),
    (chain("&&", 400, "true"), "&& and || operators"),
    ("!" * 2000 + "true", "in a row"),
    ("-" * 2000 + "1 == 1", "in a row"),
    ("1 - - - - - - - - - 1 == 9", "in a row"),
])
def test_absurd_expressions_are_refused_when_compiling(engine, source, fragment) -> None:
    with pytest.raises(CelCompileError) as info:
        engine.compile(source)
    assert fragment in info.value.message


@pytest.mark.parametrize("source", [
    "(" * MAX_NESTING + "true" + ")" * MAX_NESTING,
    "ce" + ".a" * (MAX_DEPTH - 2) + " == 1",
    "1" + " + 1" * (MAX_DEPTH - 2) + " == 31",
    chain("||", MAX_LOGICAL, "false") + " || true",
    "(" * 16 + chain("&&", 60, "true") + ")" * 16,
    "!" * MAX_UNARY_RUN + "true",
    "1 != 2 && !(1 != 1) && -1 < - 0",
])
def test_expressions_at_the_limits_work_even_on_a_small_thread_stack(engine, source) -> None:
    results: list[str] = []

    def run() -> None:
        results.append(outcome(engine, source, {"a": {"a": {}}}))

    previous = threading.stack_size(512 * 1024)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(previous)
    assert results and results[0] in {"true", "eval-error"}
    if not source.startswith("ce"):
        assert results[0] == "true"


def test_select_engine() -> None:
    assert isinstance(select("cel-expr"), CelExprEngine)
    assert isinstance(select("auto"), CelExprEngine)
    with pytest.raises(ValueError, match="the celpy engine is gone"):
        select("celpy")
    with pytest.raises(ValueError, match="unknown CEL engine"):
        select("v8")


def test_compiled_programs_are_shared_safely_between_threads(engine) -> None:
    """Request threads evaluate the same compiled programs at once, each against its own
    event (a request converts its event once, for its own thread)."""
    from subscription_filter.binding import rewrite, subscriber_binding
    from subscription_filter.celengine import plain

    program = engine.compile(rewrite(SEED_CEL["approvalpending"]).expression)
    value = engine.value(plain(ce("approvalpending")))
    people = {"admin": True, "bob": True, "alice": False, "carol": False}
    wrong: list[str] = []

    def work(offset: int) -> None:
        run = program.for_event(engine.event(value))
        names = list(people)
        for i in range(60):
            name = names[(i + offset) % len(names)]
            bound = engine.value(subscriber_binding({"name": name}))
            try:
                if run(bound) is not people[name]:
                    wrong.append(name)
            except Exception as exc:  # a thread's failure must fail the test
                wrong.append(f"{name}: {exc}")

    workers = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert wrong == []
