"""``kubeevent lint`` on the seed's files and on broken ones made here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.support import (
    PLATFORM_URL,
    SEED_ADMIN,
    SEED_CONFIG_PATCH,
    TEMPLATES,
    TYPE,
    run,
    subscription_for,
    write_yaml,
)

SEED_TEXT = SEED_ADMIN.read_text(encoding="utf-8")


def where(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    """1-based (line, column) of ``needle`` (plus ``offset`` characters) in ``text``."""
    index = text.index(needle) + offset
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def findings(payload: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in payload["findings"] if f["check"] == check]


def test_the_seed_files_are_clean() -> None:
    done = run("lint", SEED_ADMIN, TEMPLATES, SEED_CONFIG_PATCH, "--platform-url", PLATFORM_URL)
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.strip() == (
        f"0 errors, 0 warnings in 6 documents (3 files); template mapping from "
        f"{SEED_CONFIG_PATCH}")
    payload = run("lint", "--json", "--strict", SEED_ADMIN, TEMPLATES, SEED_CONFIG_PATCH,
                  "--platform-url", PLATFORM_URL).json()
    assert payload["ok"] is True
    assert (payload["errors"], payload["warnings"], payload["documents"]) == (0, 0, 6)


def test_standard_input_and_warnings_with_strict() -> None:
    clean = run("lint", "-", stdin=SEED_TEXT)
    assert clean.returncode == 0, clean.stdout
    # Without a platform URL the templates' links are relative: a warning, fatal with --strict.
    relaxed = run("lint", TEMPLATES, "--json")
    assert relaxed.returncode == 0
    warnings = findings(relaxed.json(), "render")
    assert len(warnings) == 4 and all("not an absolute link" in w["message"] for w in warnings)
    assert run("lint", TEMPLATES, "--strict").returncode == 1


def test_cel_errors_point_into_the_file(tmp_path: Path) -> None:
    text = SEED_TEXT.replace('item.name == "$(subscriber.name)")',
                             'item.name == "$(subscriber.name)" ||)')
    text = text.replace("!has(ce.data.event.message) &&",
                        "!has(ce.data.event.message) && foo(1) &&")
    bad = tmp_path / "bad-cel.yaml"
    bad.write_text(text, encoding="utf-8")
    done = run("lint", bad)
    assert done.returncode == 1
    line, column = where(text, '" ||)', 4)  # the ")" the parser trips on
    assert f"{bad}:{line}:{column}: error: [cel] " \
        "ClusterSubscription/admin-artifactpromotionrun-subscription: " \
        "spec.subscriptions[0].events[0].filter.cel: syntax error: unexpected ')'" in done.stdout
    payload = run("lint", "--json", bad).json()
    cel = findings(payload, "cel")
    assert len(cel) == 2  # every filter is compiled, not only the first bad one
    assert cel[1]["line"] == where(text, "foo(1)")[0]
    assert "foo" in cel[1]["message"]
    assert cel[1]["message"].startswith("spec.subscriptions[0].events[2].filter.cel: ")
    assert payload["ok"] is False and payload["errors"] == 2


def test_every_kind_of_problem_is_reported(tmp_path: Path) -> None:
    owner = write_yaml(tmp_path / "owner.yaml", subscription_for("bob", owner="alice"))
    unmapped = subscription_for("carol", reasons=("approvalpending",))
    unmapped["spec"]["subscriptions"][0]["events"][0]["type"] = TYPE.format("succeeded")
    unknown = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
    mixed = write_yaml(tmp_path / "mixed.yaml", unmapped, unknown)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("kind: ClusterSubscription\nmetadata: [1,\n", encoding="utf-8")
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(SEED_TEXT.replace("  subscriber:\n", "  subscriber: {}\n  subscriber:\n"),
                         encoding="utf-8")
    templates = tmp_path / "templates.yaml"
    templates.write_text(
        "apiVersion: core.katanomi.dev/v1alpha1\n"
        "kind: NotificationTemplate\n"
        "metadata:\n  name: kubeevent.artifactpromotionrun.approvalpending\n"
        "spec:\n  corpwechat:\n    msgtype: markdown\n    title: Pending\n"
        "    content: |\n      line one\n      {{ event.type\n"
        "---\n"
        "apiVersion: core.katanomi.dev/v1alpha1\n"
        "kind: NotificationTemplate\n"
        "metadata:\n  name: kubeevent.artifactpromotionrun.failed\n"
        "spec:\n  corpwechat:\n    msgtype: markdown\n"
        "    content: '{{ event.data.object.metadata.name.upper(1, 2) }}'\n"
        "---\n"
        "apiVersion: core.katanomi.dev/v1alpha1\n"
        "kind: NotificationTemplate\n"
        "metadata:\n  name: kubeevent.artifactpromotionrun.running\n"
        "spec:\n  corpwechat:\n    msgtype: card\n    content: hi\n",
        encoding="utf-8")
    done = run("lint", "--json", owner, mixed, bad_yaml, duplicate, templates)
    assert done.returncode == 1
    payload = done.json()
    [owner_error] = findings(payload, "owner")
    owner_line = where(owner.read_text(encoding="utf-8"), "katanomi.dev/owned.username")[0]
    assert (owner_error["file"], owner_error["line"]) == (str(owner), owner_line)
    assert "katanomi.dev/owned.username is 'alice'; it must equal spec.subscriber.name 'bob'" \
        in owner_error["message"]
    [kind] = findings(payload, "kind")
    assert kind["document"] == "Deployment/web" and "unknown kind 'Deployment'" in kind["message"]
    yaml_errors = findings(payload, "yaml")
    assert {(f["file"], f["line"]) for f in yaml_errors} == {
        (str(bad_yaml), 3), (str(duplicate), where(SEED_TEXT, "  subscriber:\n")[0] + 1)}
    mapping = findings(payload, "mapping")
    assert {f["severity"] for f in mapping} == {"warning"}
    [unmapped_type] = [f for f in mapping if f["file"] == str(mixed)]
    assert f"no template maps event type {TYPE.format('succeeded')}" in unmapped_type["message"]
    assert unmapped_type["document"] == \
        "ClusterSubscription/carol-artifactpromotionrun-subscription"
    # Only some of the four templates were given: the others cannot be checked.
    assert any("maps to template 'kubeevent.artifactpromotionrun.approvaldenied', which is "
               "not among the given templates" in f["message"] for f in mapping)
    template_errors = findings(payload, "template")
    syntax = next(f for f in template_errors if "TemplateSyntaxError" in f["message"])
    assert (syntax["line"], syntax["column"]) == (11, 7)
    assert any("msgtype 'card'" in f["message"] for f in template_errors)
    schema = [f for f in findings(payload, "schema") if f["file"] == str(templates)]
    assert [f["message"] for f in schema] == [
        "spec.corpwechat.msgtype: 'card' is not one of ['text', 'markdown', 'textcard', "
        "'template_card']"]
    [render] = findings(payload, "render")
    assert render["document"] == "NotificationTemplate/kubeevent.artifactpromotionrun.failed"
    assert "fails against a sample artifactpromotionrun.failed event" in render["message"]
    assert payload["errors"] == len([f for f in payload["findings"] if f["severity"] == "error"])


def test_templates_render_against_a_given_event(tmp_path: Path) -> None:
    from dev.support.factory import kube_event, promotion_run

    obj = promotion_run(name="release-42", requester="zoe")
    event = write_yaml(tmp_path / "event.yaml", kube_event("ApprovalPending", obj=obj))
    obj_file = write_yaml(tmp_path / "object.yaml", obj)
    template = {
        "apiVersion": "core.katanomi.dev/v1alpha1", "kind": "NotificationTemplate",
        "metadata": {"name": "kubeevent.artifactpromotionrun.approvalpending"},
        "spec": {"corpwechat": {"msgtype": "textcard", "title": "{{ 'x' * 200 }}",
                                "content": "{{ event.data.object.metadata.name }}",
                                "url": "{{ platform_url }}/runs"}},
    }
    path = write_yaml(tmp_path / "template.yaml", template)
    payload = run("lint", "--json", path, "--event", event, "--object", obj_file).json()
    messages = [f["message"] for f in payload["findings"]]
    assert "title is cut to WeCom's limit against the given event" in messages
    assert any("url is not an absolute link against the given event ('/runs')" in m
               for m in messages)


def test_a_template_that_would_exhaust_the_notifier_is_reported(tmp_path: Path) -> None:
    template = {
        "apiVersion": "core.katanomi.dev/v1alpha1", "kind": "NotificationTemplate",
        "metadata": {"name": "kubeevent.artifactpromotionrun.approvalpending"},
        "spec": {"corpwechat": {"msgtype": "text", "content":
                                "{% for a in range(100000) %}{% for b in range(100000) %}"
                                "{% endfor %}{% endfor %}done"}},
    }
    path = write_yaml(tmp_path / "template.yaml", template)
    payload = run("lint", "--json", path).json()
    (finding,) = findings(payload, "render")
    assert finding["severity"] == "error"
    assert "ran more than 1000000 steps" in finding["message"]
    assert "built-in message" in finding["message"]


def test_every_problem_of_a_subscription_is_reported(tmp_path: Path) -> None:
    text = SEED_TEXT.replace('katanomi.dev/owned.username: "admin"',
                             'katanomi.dev/owned.username: "mallory"')
    text = text.replace('"core.katanomi.dev/sink.pluginclasses": "corpwechat"',
                        '"core.katanomi.dev/sink.pluginclasses": " , "')
    text = text.replace('item.name == "$(subscriber.name)")',
                        'item.name == "$(subscriber.name)") &&\n          )')
    text = text.replace('    - type: "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.'
                        'running.v1alpha1"', '    - type: ""')
    bad = tmp_path / "many.yaml"
    bad.write_text(text, encoding="utf-8")
    payload = run("lint", "--json", bad).json()
    assert payload["ok"] is False
    errors = [(f["check"], f["line"], f["column"]) for f in payload["findings"]
              if f["severity"] == "error"]
    # The CEL error is on the second line of the filter, after a placeholder: its column
    # counts in the text as written, not in the expression the filter compiles.
    lines = text.splitlines()
    cel_line = next(i for i, line in enumerate(lines, 1) if line == "          )")
    assert sorted(errors) == sorted([
        ("owner", *where(text, '"mallory"')),
        ("channels", *where(text, '" , "')),
        ("schema", *where(text, '- type: ""', 8)),
        ("cel", cel_line, 11),
    ])
    messages = {f["check"]: f["message"] for f in payload["findings"]}
    assert messages["schema"] == \
        "not used (InvalidSpec): spec.subscriptions[0].events[2].type is required"
    assert messages["cel"] == "spec.subscriptions[0].events[0].filter.cel: syntax error: " \
        "unexpected ')'"


def test_a_broken_mapping_entry_is_a_warning_where_it_is_written(tmp_path: Path) -> None:
    text = SEED_CONFIG_PATCH.read_text(encoding="utf-8").replace(
        "      templateRef:\n        name: kubeevent.artifactpromotionrun.running\n",
        "      templateref:\n        name: kubeevent.artifactpromotionrun.running\n")
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    payload = run("lint", "--json", config).json()
    [broken] = [f for f in findings(payload, "mapping") if "entry" in f["message"]]
    assert broken["severity"] == "warning"
    assert broken["message"] == \
        "katanomi-config notification.templates: entry 2 needs type and templateRef.name; skipped"
    running = '- type: "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.running'
    assert (broken["line"], broken["column"]) == where(text, running, 2)  # the entry
    yaml_error = tmp_path / "unparsable.yaml"
    yaml_error.write_text(text.replace("    - type:", "    - type: [", 1), encoding="utf-8")
    payload = run("lint", "--json", yaml_error).json()
    [broken] = [f for f in findings(payload, "mapping") if "not valid YAML" in f["message"]]
    assert broken["line"] == where(text, "notification.templates:")[0]


def test_a_channel_no_notifier_serves_is_an_error_where_it_is_written(
        tmp_path: Path) -> None:
    """``corpwechatt`` was Ready and reached nobody: lint says which channels are served,
    by the filter's NOTIFICATION_CHANNELS in its manifest (or ``--channels``)."""
    text = SEED_TEXT.replace('"core.katanomi.dev/sink.pluginclasses": "corpwechat"',
                             '"core.katanomi.dev/sink.pluginclasses": "corpwechatt"')
    typo = tmp_path / "typo.yaml"
    typo.write_text(text, encoding="utf-8")
    payload = run("lint", "--json", typo).json()
    assert payload["ok"] is False
    (finding,) = findings(payload, "channels")
    assert finding["severity"] == "error"
    assert (finding["line"], finding["column"]) == where(text, '"corpwechatt"')
    assert finding["message"] == (
        "not used (UnknownChannel): annotation core.katanomi.dev/sink.pluginclasses names "
        "corpwechatt, which no notifier here serves; known channels: corpwechat, email")
    served = run("lint", "--json", "--channels", "corpwechat,corpwechatt", typo).json()
    assert findings(served, "channels") == []


def test_a_field_the_crd_does_not_know_is_an_error_as_the_api_server_says_it(
        tmp_path: Path) -> None:
    """``filters:`` for ``filter:`` once passed lint (the filter was dropped, simulate said
    MATCH); the API server refuses it: so does lint, in its words, at its place."""
    text = SEED_TEXT.replace("      filter:", "      filters:", 1)
    text = text.replace("  subscriber:\n", "  subscriber:\n    nickname: boss\n", 1)
    bad = tmp_path / "misspelled.yaml"
    bad.write_text(text, encoding="utf-8")
    done = run("lint", bad)
    assert done.returncode == 1
    payload = run("lint", "--json", bad).json()
    unknown = [f for f in findings(payload, "schema") if "unknown field" in f["message"]]
    assert [f["message"] for f in unknown] == [
        'unknown field "spec.subscriber.nickname"',
        'unknown field "spec.subscriptions[0].events[0].filters"']
    assert unknown[1]["line"] == where(text, "      filters:")[0]
    assert f'{bad}:{unknown[1]["line"]}:' in done.stdout


def test_unknown_fields_follow_the_structural_schemas_rules() -> None:
    """What the API server keeps: declared properties, anything under
    x-kubernetes-preserve-unknown-fields, any key of an additionalProperties map (its
    values checked in turn), apiVersion/kind/metadata at the root; nothing else."""
    from kubeevent_cli.crds import unknown_fields

    item = {"type": "object", "properties": {"y": {"type": "string"}}}
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "string"},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "map": {"type": "object", "additionalProperties": item},
        "list": {"type": "array", "items": item}}}}}
    data = {"apiVersion": "v1", "kind": "K", "metadata": {"anything": 1},
            "spec": {"a": "", "b": 1, "free": {"any": {"deep": 1}},
                     "map": {"k": {"y": "", "z": 2}}, "list": [{"y": ""}, {"w": 1}]},
            "status": {}}
    assert list(unknown_fields(schema, data)) == [
        ("spec", "b"), ("spec", "map", "k", "z"), ("spec", "list", 1, "w"), ("status",)]


def test_an_event_type_in_another_case_is_one_that_is_never_sent(tmp_path: Path) -> None:
    text = SEED_TEXT.replace("artifactpromotionrun.failed.v1alpha1",
                             "artifactpromotionrun.Failed.v1alpha1")
    bad = tmp_path / "case.yaml"
    bad.write_text(text, encoding="utf-8")
    payload = run("lint", "--json", bad).json()
    (found,) = [f for f in findings(payload, "type") if "capital letters" in f["message"]]
    assert found["severity"] == "warning"
    assert found["line"] == where(text, "artifactpromotionrun.Failed")[0]
    assert "did you mean 'dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.failed" \
           ".v1alpha1'?" in found["message"]


@pytest.mark.parametrize("written, says", [
    # an unquoted heredoc ran $(subscriber.name) in the shell: nothing is left of it
    ('item.name == "")', "compares with an empty string and binds no $(subscriber.…)"),
    ('item.name == "${subscriber.name}")', "'${subscriber.name}' is not a binding"),
])
def test_a_binding_lost_on_the_way_is_shown(tmp_path: Path, written: str, says: str) -> None:
    text = SEED_TEXT.replace('item.name == "$(subscriber.name)")', written)
    bad = tmp_path / "lost.yaml"
    bad.write_text(text, encoding="utf-8")
    done = run("lint", "--json", bad)
    assert done.returncode == 0, "legal CEL: a warning, not an error"
    (found,) = findings(done.json(), "binding")
    assert says in found["message"] and found["severity"] == "warning"
    assert found["line"] == where(text, "cel:")[0], "at the filter it is in"


def test_notifier_annotations_it_cannot_read_are_warned_about_at_their_place(tmp_path):
    doc = yaml.safe_load(SEED_ADMIN.read_text(encoding="utf-8"))
    doc["metadata"]["annotations"]["kubeevent.io/quiet-hours"] = "10pm-8am"
    doc["metadata"]["annotations"]["kubeevent.io/approval-reminders"] = "every hour"
    path = write_yaml(tmp_path / "admin.yaml", doc)
    done = run("lint", "--json", path)
    found = [f for f in done.json()["findings"] if f["check"] == "annotation"]
    assert [f["message"].split(":")[0].split(" ")[0] for f in found] \
        == ["kubeevent.io/quiet-hours", "kubeevent.io/approval-reminders"]
    assert all(f["severity"] == "warning" and f["line"] for f in found)
    doc["metadata"]["annotations"].update({"kubeevent.io/quiet-hours": "off",
                                           "kubeevent.io/approval-reminders": "30m,2h"})
    clean = run("lint", "--json", write_yaml(tmp_path / "fine.yaml", doc)).json()
    assert [f for f in clean["findings"] if f["check"] == "annotation"] == []


def test_a_path_the_kinds_schema_does_not_have_is_warned_about_where_it_is_written(tmp_path):
    """The issue's example: ``status.approvalSpec`` (the run keeps it under
    ``status.artifactPromotionSpec``) is Ready and silent on the cluster; lint checks the
    filter's paths against the kind's schema (the stand-in for the seed's kind) and the
    Event's, and says what was meant."""
    wrong = SEED_TEXT.replace("status.artifactPromotionSpec.approvalSpec.users.exists",
                              "status.approvalSpec.users.exists").replace(
        "!has(ce.data.event.message)", "!has(ce.data.event.mesage)")
    path = tmp_path / "admin.yaml"
    path.write_text(wrong, encoding="utf-8")
    found = [f for f in run("lint", "--json", path).json()["findings"]
             if f["check"] == "field"]
    lines = wrong.splitlines()
    assert [(f["severity"], lines[f["line"] - 1][f["column"] - 1:f["column"] + 20])
            for f in found] == [("warning", "ce.data.object.status"),
                                ("warning", "ce.data.event.mesage)")]
    assert "did you mean ce.data.object.status.artifactPromotionSpec.approvalSpec?" \
        in found[0]["message"]
    assert "a Kubernetes Event: the top has no field 'mesage'" in found[1]["message"]
    clean = run("lint", "--json", SEED_ADMIN).json()["findings"]
    assert [f for f in clean if f["check"] == "field"] == []


def test_a_kinds_schema_comes_from_schema_or_from_a_crd_among_the_files(tmp_path):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object", "properties": {
                                          "spec": {"type": "object", "properties": {
                                              "owner": {"type": "string"}}}}}}}]}}
    sub = subscription_for("alice")
    entry = sub["spec"]["subscriptions"][0]
    entry["object"] = {"kind": "Widget", "apiVersion": "example.com/v1", "namespace": "devops"}
    entry["events"] = [{"type": "dev.katanomi.cloudevents.kubeevent.widget.ready.v1alpha1",
                        "filter": {"cel": 'ce.data.object.spec.ownr == "$(subscriber.name)"'}}]
    subs = write_yaml(tmp_path / "sub.yaml", sub)
    schema = write_yaml(tmp_path / "crd.yaml", crd)

    def fields(*args) -> list[str]:
        return [f["message"] for f in run("lint", "--json", *args).json()["findings"]
                if f["check"] == "field"]

    assert fields(subs) == [], "no schema for Widget: not checked"
    expected = ["ce.data.object.spec.ownr: Widget's schema: spec has no field 'ownr' "
                "(it has: owner): it is never there"]
    assert fields(subs, "--schema", schema) == expected
    assert fields(subs, schema) == expected
    run("lint", subs, "--schema", subs).assert_user_error("not a CustomResourceDefinition")


def test_the_ownership_policys_own_rules_judge_the_author(tmp_path):
    """manifests/policy's ValidatingAdmissionPolicy, evaluated offline with its own CEL
    (its optional-syntax tests written out): as the API server would answer --as."""
    bobs = write_yaml(tmp_path / "bob.yaml", subscription_for("bob"))

    def policy(*args) -> list[tuple[str, str]]:
        done = run("lint", "--json", *args)
        return [(f["severity"], f["message"]) for f in done.json()["findings"]
                if f["check"] == "policy"]

    assert policy(bobs) == [], "its owner may create it"
    assert policy(bobs, "--as", "bob") == []
    assert policy(bobs, "--as", "alice") == [
        ("error", "the admission policy refuses it from alice: spec.subscriber must be the "
                  "User alice: you may only subscribe yourself"),
        ("error", "the admission policy refuses it from alice: the annotation "
                  "katanomi.dev/owned.username must be alice")]
    assert run("lint", bobs, "--as", "alice").returncode == 1
    assert policy(bobs, "--as", "root", "--as-group", "system:masters") == []
    group = subscription_for("platform-team")
    group["spec"]["subscriber"]["kind"] = "Group"
    (said,) = policy(write_yaml(tmp_path / "group.yaml", group))
    assert said == ("warning", "the admission policy refuses it even from its owner "
                    "platform-team (an admin may create it): spec.subscriber must be the User "
                    "platform-team: you may only subscribe yourself")
