"""Rendering: the shipped templates, the sandbox, WeCom's size limits, the fallback text."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from corpwechat_notifier.render import (
    CONTENT_LIMIT,
    DESCRIPTION_LIMIT,
    TITLE_LIMIT,
    URL_LIMIT,
    Renderer,
    RenderError,
    TemplateSpec,
    build_message,
    fallback_message,
    parse_template,
    template_context,
    truncate_utf8,
    utf8_len,
)
from corpwechat_notifier.templates import (
    BUILTIN,
    TemplateStore,
    message_for,
    parse_mapping,
    select_template,
)
from dev.support import factory
from dev.support.seed import example
from tests.corpwechat_notifier.support import (
    CRD_FILE,
    PLATFORM_URL,
    TEMPLATE_FILE,
    installed_templates,
)

REASONS = ("approvalpending", "approvaldenied", "running", "failed")
RUN_URL = f"{PLATFORM_URL}/console-devops/workspace/devops/artifactpromotionruns/my-promotion"


def event_dict(reason: str = "approvalpending", **kwargs: Any) -> dict[str, Any]:
    """The enriched event as a template sees it (structured JSON: attributes + data)."""
    return factory.as_json(factory.enriched_event(reason, **kwargs))


def render(spec: TemplateSpec, event: dict[str, Any] | None = None,
           subscriber: dict[str, Any] | None = None, platform_url: str = ""):
    renderer = Renderer()
    return renderer.render(renderer.compile(spec),
                           template_context(event or event_dict(), subscriber, platform_url))


def text_spec(content: str, **fields: str) -> TemplateSpec:
    return TemplateSpec(name="test", msgtype=fields.pop("msgtype", "text"), content=content,
                        **fields)


# ---------------------------------------------------------------- the shipped file


def test_template_file_has_no_dollar_but_the_platform_url():
    text = TEMPLATE_FILE.read_text(encoding="utf-8")
    # each template's WeCom url and its email text and html parts, twice each
    assert text.count("${PLATFORM_URL}") == 4 * 3 * 2
    assert text.count("$") == text.count("${PLATFORM_URL}")


def test_envsubst_output_holds_the_four_seed_templates(templates):
    mapping, problems = parse_mapping(yaml.safe_load(example("seed-katanomi-config-patch.yaml"))
                                      ["data"]["notification.templates"])
    assert problems == []
    assert sorted(mapping) == sorted(factory.KUBEEVENT.format(r) for r in REASONS)
    assert sorted(templates) == sorted(mapping.values())
    for doc in templates.values():
        assert doc["apiVersion"] == "core.katanomi.dev/v1alpha1"
        assert doc["kind"] == "NotificationTemplate"
        assert doc["metadata"]["namespace"] == "cpaas-system"
        # the approvers' card can be changed once it is decided; the others are textcards
        assert doc["spec"]["corpwechat"]["msgtype"] == (
            "template_card" if doc["metadata"]["name"].endswith(".approvalpending")
            else "textcard")
        assert PLATFORM_URL in doc["spec"]["corpwechat"]["url"]
        assert "$" not in yaml.safe_dump(doc, allow_unicode=True)


def test_templates_are_valid_against_the_crd(templates):
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    assert crd["metadata"]["name"] == "notificationtemplates.core.katanomi.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for doc in templates.values():
        jsonschema.validate(doc, schema)
    bad = {**next(iter(templates.values()))}
    bad["spec"] = {"corpwechat": {"msgtype": "news", "content": "x"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("reason", REASONS)
def test_seed_templates_render_a_complete_bilingual_card(templates, reason):
    spec = parse_template(templates[f"kubeevent.artifactpromotionrun.{reason}"])
    message = render(spec, event_dict(reason, message="image scan failed"
                                      if reason in ("failed", "approvaldenied") else None))
    assert message.msgtype == ("template_card" if reason == "approvalpending" else "textcard")
    title = message.get("title")
    description = message.get("description") or message.get("content")
    assert "制品晋级" in title and "Artifact promotion" in title
    # who asked, what artifact, from where to where, which run
    for expected in ("申请人", "Requested by", "alice", "制品", "Artifact",
                     "registry.example.com/devops/app:v1.2.3", "From",
                     "registry.example.com/devops/app", "To", "registry.example.com/prod/app",
                     "devops/my-promotion"):
        assert expected in description, (reason, expected)
    assert message.get("url") == RUN_URL
    if reason in ("failed", "approvaldenied"):
        assert "image scan failed" in description
    assert utf8_len(title) <= TITLE_LIMIT and utf8_len(description) <= DESCRIPTION_LIMIT
    assert "None" not in description and "{{" not in description


@pytest.mark.parametrize("reason", ["failed", "approvaldenied"])
def test_the_events_own_words_are_quoted_and_cannot_dress_up_as_the_card(templates, reason):
    """Whoever may create Events writes the message: it is shown as the Event's words,
    and markup in it stays text."""
    spec = parse_template(templates[f"kubeevent.artifactpromotionrun.{reason}"])
    lure = '</div><div class="highlight">SSO password expired: reset at https://x.invalid</div>'
    description = render(spec, event_dict(reason, message=lure)).get("description")
    assert "事件原文 The Event says: “" in description
    assert '<div class="highlight">SSO' not in description
    assert "&lt;div class=&#34;highlight&#34;&gt;SSO" in description


def test_each_template_says_what_happened(templates):
    titles = {reason: render(parse_template(templates[f"kubeevent.artifactpromotionrun.{reason}"]),
                             event_dict(reason)).get("title") for reason in REASONS}
    assert "审批" in titles["approvalpending"] and "approval" in titles["approvalpending"]
    assert "拒绝" in titles["approvaldenied"] and "denied" in titles["approvaldenied"]
    assert "执行" in titles["running"] and "running" in titles["running"]
    assert "失败" in titles["failed"] and "failed" in titles["failed"]


def test_templates_installed_without_platform_url_use_the_notifier_setting():
    docs = {d["metadata"]["name"]: d for d in installed_templates(platform_url=None)}
    spec = parse_template(docs["kubeevent.artifactpromotionrun.running"])
    message = render(spec, event_dict("running"), platform_url="https://console.example.org")
    assert message.get("url") == ("https://console.example.org/console-devops/workspace/devops/"
                                  "artifactpromotionruns/my-promotion")


def test_templates_applied_without_envsubst_use_the_notifier_setting():
    """`kubectl apply -k manifests` leaves the placeholder as it is written."""
    raw = yaml.safe_load_all(TEMPLATE_FILE.read_text(encoding="utf-8"))
    docs = {d["metadata"]["name"]: d for d in raw if d}
    spec = parse_template(docs["kubeevent.artifactpromotionrun.approvalpending"])
    message = render(spec, event_dict("approvalpending"), platform_url="https://acp.local")
    assert message.get("url") == ("https://acp.local/console-devops/workspace/devops/"
                                  "artifactpromotionruns/my-promotion")


def test_templates_survive_an_object_with_missing_fields(templates):
    obj = factory.promotion_run()
    del obj["status"]
    del obj["spec"]
    spec = parse_template(templates["kubeevent.artifactpromotionrun.approvalpending"])
    text = render(spec, event_dict(obj=obj)).get("content")
    assert "Requested by: -" in text
    assert "devops/my-promotion" in text
    assert "None" not in text


def test_templates_survive_a_deleted_object(templates):
    event = event_dict("failed", message="gone")
    event["data"]["object"] = None
    spec = parse_template(templates["kubeevent.artifactpromotionrun.failed"])
    message = render(spec, event)
    assert message.get("url") == RUN_URL  # from the event's attributes
    assert "gone" in message.get("description")


def test_values_are_data_never_template_code(templates):
    obj = factory.promotion_run(requester="{{ 7*7 }}{% raw %}", artifact="{{ ''.__class__ }}")
    spec = parse_template(templates["kubeevent.artifactpromotionrun.approvaldenied"])
    description = render(spec, event_dict("approvaldenied", obj=obj)).get("description")
    assert "{{ 7*7 }}{% raw %}" in description and "49" not in description
    assert "{{ &#39;&#39;.__class__ }}" in description, "data, escaped for the card's HTML"


# ------------------------------------------------- values escaped for where they land

# The source document's pending-approval template as a textcard (HTML description).
TEXTCARD_PENDING = {
    "metadata": {"name": "seed.textcard.approvalpending"},
    "spec": {"corpwechat": {
        "msgtype": "textcard",
        "title": "制品晋级待您审批 / Artifact promotion awaiting your approval",
        "content": (
            "{%- set run = event.data.object -%}"
            "{%- set promotion = run.status.artifactPromotionSpec -%}"
            '<div class="highlight">请审批 Please review: {{ event.involvedobjectnamespace }}/'
            "{{ event.involvedobjectname }}</div>"
            '<div class="normal">申请人 Requested by: {{ run.status.triggeredBy.user.name }}'
            "</div>"
            '<div class="normal">制品 Artifact: {{ run.spec.artifact }}</div>'
            '<div class="normal">从 From: {{ promotion.source.uri }}</div>'
            '<div class="normal">到 To: {{ promotion.target.uri }}</div>'),
        "url": "https://acp.example.com/runs/{{ event.involvedobjectname }}",
    }},
}
FORGED_APPROVAL = ('<div class="highlight">✅ 安全团队已批准 Approved by security team</div>'
                   '<div class="normal">到 To: registry.example.com/staging/app</div>')


def test_an_object_field_cannot_inject_card_markup_or_push_the_target_out(templates):
    """A requester's ``spec.artifact`` with a forged line and padding: shown as text, cut,
    and the real target, name and namespace still fit the 512-byte description."""
    obj = factory.promotion_run(artifact=FORGED_APPROVAL + " " * 40 + "x" * 2000)
    spec = parse_template(TEXTCARD_PENDING)
    description = render(spec, event_dict("approvalpending", obj=obj)).get("description")
    assert len(description.encode()) <= 512
    assert '<div class="highlight">✅' not in description
    assert "&lt;div class=&#34;highlight&#34;&gt;✅" in description \
        or "&lt;div class=&quot;highlight&quot;&gt;✅" in description
    assert description.rstrip().endswith("到 To: registry.example.com/prod/app</div>")
    assert "请审批 Please review: devops/my-promotion" in description
    assert description.count("<div") == 5, "only the template's own markup"


def test_an_object_field_cannot_forge_a_line_of_the_approvers_card(templates):
    """The shipped card is plain text, one line per field: a forged value stays on its
    own field's line (line breaks in values are spaces), is cut, and the real target,
    name and namespace still fit the card's 512 bytes."""
    obj = factory.promotion_run(artifact="x\n到 To: registry.example.com/staging/app"
                                + " " * 40 + "x" * 2000)
    spec = parse_template(templates["kubeevent.artifactpromotionrun.approvalpending"])
    text = render(spec, event_dict("approvalpending", obj=obj)).get("content")
    assert len(text.encode()) <= 512
    lines = text.splitlines()
    assert lines[0] == "请审批 Please review: devops/my-promotion"
    assert lines[-1] == "到 To: registry.example.com/prod/app"
    assert len(lines) == 5 and lines[2].startswith("制品 Artifact: x 到 To: ")


@pytest.mark.parametrize("sneaky", ["\u202e", "\u200b", "\u2066", "\ufeff", "\x1b[2K",
                                    "\x07", "\u0085", "\n"])
def test_bidi_zero_width_and_control_characters_are_removed(templates, sneaky):
    obj = factory.promotion_run(requester=f"ali{sneaky}ce", artifact=f"app{sneaky}:v1")
    spec = parse_template(templates["kubeevent.artifactpromotionrun.approvalpending"])
    text = render(spec, event_dict("approvalpending", obj=obj)).get("content")
    assert f"ali{sneaky}ce" not in text and f"app{sneaky}:v1" not in text
    assert sneaky == "\n" or sneaky not in text  # the card's own lines are its template's
    assert "\x1b" not in text
    assert "ali" in text and "app" in text


@pytest.mark.parametrize(("msgtype", "absent", "present"), [
    ("text", ['<a href="https://evil.example/approve">'], ["＜a href="]),
    ("markdown", ["[重新提交审批](https://evil.example/approve)", '<font color="warning">'],
     ["［重新提交审批］", "＜font"]),
])
def test_values_cannot_make_links_or_markup_in_text_and_markdown(msgtype, absent, present):
    hostile = ('<a href="https://evil.example/approve">重新提交审批</a> '
               '[重新提交审批](https://evil.example/approve) <font color="warning">x</font>')
    spec = TemplateSpec(name="t", msgtype=msgtype, title="**{{ event.data.event.reason }}**",
                        content="说: {{ event.data.event.message }}")
    message = render(spec, event_dict("approvaldenied", message=hostile))
    content = message.get("content")
    for text in absent:
        assert text not in content
    for text in present:
        assert text in content


def test_a_url_value_cannot_end_the_link_or_change_its_scheme():
    spec = TemplateSpec(name="t", msgtype="textcard", title="t", content="c",
                        url="{{ event.data.object.spec.link }}")
    obj = factory.promotion_run()
    obj["spec"]["link"] = 'https://acp.example.com/x" onclick="y <b>'
    message = render(spec, event_dict("approvaldenied", obj=obj))
    assert message.get("url") == "https://acp.example.com/x%22%20onclick=%22y%20%3Cb%3E"
    obj["spec"]["link"] = "javascript:alert(1)"
    assert render(spec, event_dict("approvaldenied", obj=obj)).msgtype == "text", \
        "no link at all rather than a script"


# ---------------------------------------------------------------- the sandbox

SSTI = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ range.__self__ }}",
    "{{ event.__class__.__base__ }}",
    "{{ event['__class__'] }}",
    "{{ event|attr('__class__') }}",
    "{{ event.data|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ [event]|map(attribute='__class__')|list }}",
    "{{ '{0.__class__}'.format(event) }}",
    "{{ subscriber.name.__class__ }}",
    "{{ undefined_thing.__class__ }}",
    "{{ event.update({'type': 'x'}) }}",
    "{{ event.data.object.metadata.labels.clear() }}",
    "{{ 'x' * 10000000 }}",
    "{{ 9 ** 9999999 }}",
]


@pytest.mark.parametrize("payload", SSTI)
def test_template_injection_is_refused(payload):
    with pytest.raises(RenderError, match=r"refused by the sandbox|not allowed|unsafe"):
        render(text_spec(payload), subscriber={"name": "bob"})


def test_a_syntax_error_is_a_render_error():
    with pytest.raises(RenderError, match="test"):
        Renderer().compile(text_spec("{{ event.type "))


def test_plain_jinja_still_works():
    message = render(text_spec(
        "{% for u in event.data.object.status.artifactPromotionSpec.approvalSpec.users %}"
        "{{ u.name }}{{ ', ' if not loop.last }}{% endfor %} / {{ event.get('type') | upper }}"
        " / {{ event.data.object.metadata.labels.app }} / {{ missing.deep.path | default('-') }}"))
    assert message.get("content") == (
        "admin, bob / " + factory.KUBEEVENT.format("approvalpending").upper() + " / demo / -")


def test_subscriber_use_is_detected_and_rendered():
    renderer = Renderer()
    personal = renderer.compile(text_spec("Hi {{ subscriber.name }} ({{ subscriber.info.mail }})"))
    shared = renderer.compile(text_spec("{{ event.type }}"))
    assert personal.uses_subscriber and not shared.uses_subscriber
    context = template_context(event_dict(), {"name": "bob", "info": {"mail": "b@x"}}, "")
    assert renderer.render(personal, context).get("content") == "Hi bob (b@x)"


def test_rendering_output_is_bounded():
    message = render(text_spec("{% for i in range(100000) %}中文{% endfor %}"))
    assert utf8_len(message.get("content")) <= CONTENT_LIMIT
    assert message.get("content").endswith("…")


@pytest.mark.parametrize("section, error", [
    ({"msgtype": "news", "content": "x"}, "msgtype"),
    ({"msgtype": "text", "content": 5}, "must be a string"),
    ({"msgtype": "text"}, "neither title nor content"),
    (None, "no spec.corpwechat"),
])
def test_unusable_templates_are_refused(section, error):
    obj = {"metadata": {"name": "t"}, "spec": {} if section is None else {"corpwechat": section}}
    with pytest.raises(RenderError, match=error):
        parse_template(obj)


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("text, limit, expected", [
    ("中" * 682, CONTENT_LIMIT, "中" * 682),            # 2046 bytes: fits
    ("中" * 682 + "ab", CONTENT_LIMIT, "中" * 682 + "ab"),  # exactly 2048 bytes
    ("中" * 683, CONTENT_LIMIT, "中" * 681 + "…"),      # 2049 bytes: cut, mark fits
    ("a" * 2049, CONTENT_LIMIT, "a" * 2045 + "…"),
    ("中" * 43, TITLE_LIMIT, "中" * 41 + "…"),          # 129 bytes
    ("a中" * 200, DESCRIPTION_LIMIT, None),
    ("😀" * 600, URL_LIMIT, "😀" * 511 + "…"),
    ("abc", 2, "ab"),                                   # no room for the mark
])
def test_truncation_cuts_on_character_boundaries(text, limit, expected):
    result = truncate_utf8(text, limit)
    assert utf8_len(result) <= limit
    result.encode("utf-8").decode("utf-8")  # valid UTF-8
    if expected is not None:
        assert result == expected
    else:
        assert result.endswith("…") and text.startswith(result[:-1])


def test_textcard_fields_are_cut_to_their_limits():
    message = build_message("textcard", title="标题" * 100, content="内容" * 1000,
                            url="https://x/" + "中" * 1000, btntxt="查看详情按钮")
    assert utf8_len(message.get("title")) <= TITLE_LIMIT
    assert utf8_len(message.get("description")) <= DESCRIPTION_LIMIT
    assert utf8_len(message.get("url")) <= URL_LIMIT
    assert message.get("btntxt") == "查看详情"
    for name in ("title", "description", "url"):
        assert message.get(name).endswith("…")


def test_long_text_keeps_its_link():
    message = build_message("text", title="标题", content="长" * 3000, url=RUN_URL)
    content = message.get("content")
    assert utf8_len(content) <= CONTENT_LIMIT
    assert content.endswith("…\n" + RUN_URL)
    markdown = build_message("markdown", title="T", content="x" * 5000, url=RUN_URL)
    assert utf8_len(markdown.get("content")) <= CONTENT_LIMIT
    assert markdown.get("content").endswith(f"({RUN_URL})")


def test_textcard_without_url_becomes_text():
    message = build_message("textcard", title="T", content="body", url="  ")
    assert message.msgtype == "text" and message.get("content") == "T\nbody"


def test_an_empty_rendering_is_an_error():
    with pytest.raises(RenderError, match="empty"):
        render(text_spec("{{ nothing }}  "))


# ---------------------------------------------------------------- fallback


def test_fallback_message_names_the_event_bilingually():
    event = event_dict("failed", message="pull denied")
    message = fallback_message(event, PLATFORM_URL)
    content = message.get("content")
    assert message.msgtype == "text"
    for expected in ("通知", "Notification", "ArtifactPromotionRun", "devops/my-promotion",
                     "Failed", factory.KUBEEVENT.format("failed"),
                     "事件原文 The Event says: “pull denied”", RUN_URL):
        assert expected in content


def test_fallback_message_survives_any_shape():
    assert fallback_message({"type": "x"}).get("content").startswith("【通知 Notification】")
    weird = {"type": "t", "data": {"event": "nope", "object": 5}, "eventreason": None}
    assert "Event" in fallback_message(weird, "").get("content")
    other = event_dict()
    other["involvedobjectkind"] = "Pod"
    assert fallback_message(other, PLATFORM_URL).get("content").endswith("\n" + PLATFORM_URL)


# ------------------------------------------------------- template, then message, then fallback


def store_for(templates: dict[str, dict[str, Any]], mapping: str | None) -> TemplateStore:
    data = None if mapping is None else {"notification.templates": mapping}
    return TemplateStore(lambda: data, templates.get, ttl=0)


def mapped(event_type: str, name: str) -> str:
    return f"- type: {event_type}\n  templateRef: {{name: {name}}}\n"


def test_the_mapped_template_makes_the_message(templates):
    event = event_dict("approvalpending")
    renderer = Renderer()
    name = "kubeevent.artifactpromotionrun.approvalpending"
    selected = select_template(store_for(templates, mapped(event["type"], name)), renderer,
                               event["type"])
    assert (selected.name, selected.used, selected.problem) == (name, name, None)
    message, template, problem = message_for(selected, renderer, event, {"name": "admin"},
                                             PLATFORM_URL)
    assert (template, problem) == (name, None)
    assert message == render(selected.compiled.spec, event, {"name": "admin"}, PLATFORM_URL)
    assert message != fallback_message(event, PLATFORM_URL)


@pytest.mark.parametrize(("mapping", "problem"), [
    (None, "ConfigMap cpaas-system/katanomi-config not found"),
    ("", "no template mapped to"),
    ("name-of-nothing", "NotificationTemplate cpaas-system/name-of-nothing not found"),
    ("broken", "template 'broken': msgtype 'card'"),
    ("unclosed", "template 'unclosed': content: TemplateSyntaxError"),
])
def test_without_a_usable_template_the_builtin_message_is_sent(templates, mapping, problem):
    event = event_dict("failed")
    extra = {
        "broken": {"metadata": {"name": "broken"},
                   "spec": {"corpwechat": {"msgtype": "card", "content": "x"}}},
        "unclosed": {"metadata": {"name": "unclosed"},
                     "spec": {"corpwechat": {"content": "{{ event.type"}}},
    }
    text = None if mapping is None else mapped(event["type"], mapping) if mapping else ""
    renderer = Renderer()
    selected = select_template(store_for({**templates, **extra}, text), renderer,
                               event["type"])
    assert selected.compiled is None and selected.used == BUILTIN == "builtin"
    assert problem in selected.problem
    assert selected.name == (mapping or "")
    assert message_for(selected, renderer, event, {"name": "alice"}, PLATFORM_URL) == (
        fallback_message(event, PLATFORM_URL), BUILTIN, selected.problem)


def test_a_template_that_fails_for_one_subscriber_falls_back_for_that_one(templates):
    event = event_dict("failed")
    failing = {"metadata": {"name": "per-person"}, "spec": {"corpwechat": {
        "content": "{{ subscriber.info.mail.upper(1, 2) if subscriber.name == 'bob' "
                   "else 'hello ' ~ subscriber.name }}"}}}
    renderer = Renderer()
    selected = select_template(store_for({"per-person": failing},
                                         mapped(event["type"], "per-person")),
                               renderer, event["type"])
    assert selected.uses_subscriber and selected.used == "per-person"
    alice = message_for(selected, renderer, event, {"name": "alice"}, "")
    assert alice[1:] == ("per-person", None) and alice[0].get("content") == "hello alice"
    bob = message_for(selected, renderer, event, {"name": "bob", "info": {"mail": "b@x"}}, "")
    assert bob[0] == fallback_message(event, "") and bob[1] == BUILTIN
    assert "template 'per-person': content: TypeError" in bob[2]


# ---------------------------------------------------------------- templates that would exhaust it

EXHAUSTING = {
    "a huge % width": "{{ '%1000000000s' % 'x' }}",
    "a * width in %": "{{ '%*s' % (1000000000, 'x') }}",
    "str.center": "{{ 'x'.center(10**9) }}",
    "str.zfill": "{{ '1'.zfill(1000000000) }}",
    "str.format width": "{{ '{:>1000000000}'.format('x') }}",
    "the center filter": "{{ 'x'|center(1000000000) }}",
    "the indent filter": "{{ 'a\\nb'|indent(1000000000) }}",
    "the format filter": "{{ '%1000000000s'|format('x') }}",
    "list multiplication": "{{ [1] * 1000000000 }}",
    "growth through ~": "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "growth through +": "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "str.replace growth": "{{ ('x' * 50000).replace('x', 'y' * 50000) }}",
    "the replace filter's growth": "{{ ('x' * 50000)|replace('x', 'y' * 50000) }}",
    "nested loops printing nothing": "{% for a in range(100000) %}{% for b in range(100000) %}"
                                     "{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("source", EXHAUSTING.values(), ids=EXHAUSTING.keys())
def test_templates_that_would_exhaust_the_notifier_are_refused(source):
    with pytest.raises(RenderError, match="refused by the sandbox"):
        render(text_spec(source))


@pytest.mark.parametrize("source", ["{{ ('x' * 50000).replace('x', 'y' * 50000) }}",
                                    "{{ ('x' * 50000)|replace('x', 'y' * 50000) }}"])
def test_replace_growth_is_refused_before_it_allocates(source):
    # checked from the arguments ("characters"), not after building 2.5 GB ("items")
    with pytest.raises(RenderError, match="replace would build more than 1000000 characters"):
        render(text_spec(source))


def test_ordinary_widths_loops_and_growth_still_work():
    source = ("[{{ 'x'.center(9) }}|{{ '%5s' % 'a' }}|{{ '{:>4}'.format('b') }}|"
              "{% for i in range(300) %}{% endfor %}{{ ('ab' ~ 'cd') * 3 }}")
    assert render(text_spec(source)).get("content") == \
        "[    x    |    a|   b|abcdabcdabcd"


def test_the_builtin_message_carries_no_live_link_and_keeps_the_object_and_link():
    hostile = ('<a href="https://evil.example/approve">重新提交审批</a>\u202e' + "x" * 5000)
    event = event_dict("approvaldenied", message=hostile)
    event["involvedobjectname"] = "my-promotion\u200b"
    message = fallback_message(event, "https://acp.example.com")
    content = message.get("content")
    assert "<a" not in content and "＜a href=" in content
    assert "\u202e" not in content and "\u200b" not in content
    assert len(content.encode()) <= 2048
    assert "devops/my-promotion" in content
    assert content.endswith("/console-devops/workspace/devops/artifactpromotionruns/"
                            "my-promotion")
