"""Event type → NotificationTemplate, through katanomi-config ``notification.templates``,
and the message a subscriber gets, for every channel: a channel gives how its section of
the template is read (``parse``) and its built-in message (``fallback``).

Both the mapping and the templates are read lazily from the API server and kept for a
short time (TEMPLATE_CACHE_SECONDS), so an edited template applies within that time
without a watch. A missing mapping or template is an answer (the built-in message is
sent); an API server in trouble is an error (503) so the notification is retried with
the right template later. ``select_template`` then ``message_for`` is the whole order:
mapping → template → compile → render, the built-in message whenever a step has no
answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from . import logs
from .cache import Cache, Expiring
from .delivery import Message
from .render import Compiled, Renderer, RenderError, TemplateSource, template_context

CONFIG_MAP = "katanomi-config"
MAPPING_KEY = "notification.templates"
# What names the built-in message where a template's name would stand (logs, tools).
BUILTIN = "builtin"


@dataclass(frozen=True)
class Lookup:
    """A template, or why there is none."""

    spec: TemplateSource | None
    name: str = ""
    missing: str = ""


@dataclass(frozen=True)
class MappingProblem:
    """Why (part of) ``notification.templates`` is ignored: ``entry`` is the index of the
    list entry at fault (``None`` for the whole value), ``error`` the YAML error."""

    message: str
    entry: int | None = None
    error: str = ""


def parse_mapping(text: str | None) -> tuple[dict[str, str], list[MappingProblem]]:
    """The seed's YAML list of ``{type, templateRef: {name}}`` → ({event type: template},
    what was ignored). Malformed entries are skipped; the first entry for a type wins."""
    if not text or not text.strip():
        return {}, []
    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {}, [MappingProblem(f"{CONFIG_MAP} {MAPPING_KEY} is not valid YAML; ignoring it",
                                   error=" ".join(str(exc).split())[:200])]
    if not isinstance(items, list):
        return {}, [MappingProblem(f"{CONFIG_MAP} {MAPPING_KEY} is not a YAML list; ignoring it")]
    mapping: dict[str, str] = {}
    problems: list[MappingProblem] = []
    for index, item in enumerate(items):
        ref = item.get("templateRef") if isinstance(item, dict) else None
        event_type = item.get("type") if isinstance(item, dict) else None
        name = ref.get("name") if isinstance(ref, dict) else None
        if not isinstance(event_type, str) or not isinstance(name, str) or not name.strip():
            problems.append(MappingProblem(f"{CONFIG_MAP} {MAPPING_KEY}: entry {index} needs "
                                           "type and templateRef.name; skipped", index))
            continue
        mapping.setdefault(event_type.strip(), name.strip())
    return mapping, problems


class TemplateStore:
    """``read_config()`` → the ConfigMap's data or ``None``; ``read_template(name)`` → the
    NotificationTemplate object or ``None``. Both raise typed errors on API trouble."""

    def __init__(self, read_config: Callable[[], Mapping[str, str] | None],
                 read_template: Callable[[str], dict[str, Any] | None], *,
                 parse: Callable[[Mapping[str, Any]], TemplateSource],
                 namespace: str = "cpaas-system", ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read_config = read_config
        self.read_template = read_template
        self.parse = parse  # the channel's section of a template (RenderError: unusable)
        self.namespace = namespace
        self._mapping: Expiring[dict[str, str] | None] = Expiring(ttl, clock)
        # Names come from the mapping: few.
        self._templates: Cache[str, dict[str, Any] | None] = Cache(512, ttl, clock)

    def mapping(self) -> dict[str, str] | None:
        return self._mapping.get_or(self._read_mapping)

    def _read_mapping(self) -> dict[str, str] | None:
        data = self.read_config()
        if data is None:
            return None
        mapping, problems = parse_mapping(data.get(MAPPING_KEY))
        for problem in problems:
            logs.warning(problem.message, error=problem.error or None)
        return mapping

    def template(self, name: str) -> dict[str, Any] | None:
        return self._templates.get_or(name, lambda: self.read_template(name))

    def lookup(self, event_type: str) -> Lookup:
        mapping = self.mapping()
        if mapping is None:
            return Lookup(None, missing=f"ConfigMap {self.namespace}/{CONFIG_MAP} not found")
        name = mapping.get(event_type)
        if not name:
            return Lookup(None, missing=f"no template mapped to {event_type} in "
                                        f"{CONFIG_MAP} {MAPPING_KEY}")
        obj = self.template(name)
        if obj is None:
            return Lookup(None, name, missing=f"NotificationTemplate {self.namespace}/{name} "
                                              "not found")
        try:
            return Lookup(self.parse(obj), name)
        except RenderError as exc:
            return Lookup(None, name, missing=str(exc))


@dataclass(frozen=True)
class Selected:
    """What an event type's messages are made with: the mapped template's ``name`` (``""``
    when none is mapped) and, when it is usable, its ``compiled`` form; else ``problem``
    says why the built-in message is sent."""

    name: str
    compiled: Compiled | None
    problem: str | None = None

    @property
    def used(self) -> str:
        """The name of what the messages are made with: the template's, or ``BUILTIN``."""
        return self.name if self.compiled is not None else BUILTIN

    @property
    def uses_subscriber(self) -> bool:
        """Whether each subscriber may get a different message."""
        return self.compiled is not None and self.compiled.uses_subscriber


def select_template(store: TemplateStore, renderer: ChannelRenderer | Renderer,
                    event_type: str) -> Selected:
    """Mapping → template → compile, for one event type (API server trouble raises)."""
    lookup = store.lookup(event_type)
    if lookup.spec is None:
        return Selected(lookup.name, None, lookup.missing)
    try:
        return Selected(lookup.name, renderer.compile(lookup.spec))
    except RenderError as exc:
        return Selected(lookup.name, None, str(exc))


class ChannelRenderer(Protocol):
    """A channel's renderer: the shared sandbox, rendering into the channel's message."""

    def compile(self, spec: TemplateSource) -> Compiled: ...

    def render(self, compiled: Compiled, context: Mapping[str, Any]) -> Message: ...


def message_for(selected: Selected, renderer: ChannelRenderer, event: Mapping[str, Any],
                subscriber: Mapping[str, Any] | None, platform_url: str,
                fallback: Callable[[Mapping[str, Any], str], Message]
                ) -> tuple[Message, str, str | None]:
    """(the message, the template's name or ``BUILTIN``, why the built-in message
    (``fallback(event, platform_url)``) was sent or ``None``) for one subscriber
    (``None``: the same message for everyone)."""
    if selected.compiled is None:
        return fallback(event, platform_url), BUILTIN, selected.problem
    context = template_context(event, subscriber, platform_url)
    try:
        return renderer.render(selected.compiled, context), selected.name, None
    except RenderError as exc:
        return fallback(event, platform_url), BUILTIN, str(exc)
