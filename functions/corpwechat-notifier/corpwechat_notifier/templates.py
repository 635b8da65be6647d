"""Event type → NotificationTemplate, through katanomi-config ``notification.templates``.

Both the mapping and the templates are read lazily from the API server and kept for a
short time (TEMPLATE_CACHE_SECONDS), so an edited template applies within that time
without a watch. A missing mapping or template is an answer (the caller falls back to
the built-in message); an API server in trouble is an error (503) so the notification is
retried with the right template later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .render import RenderError, TemplateSpec, parse_template
from .shared import logs

CONFIG_MAP = "katanomi-config"
MAPPING_KEY = "notification.templates"


@dataclass(frozen=True)
class Lookup:
    """A template, or why there is none."""

    spec: TemplateSpec | None
    name: str = ""
    missing: str = ""


def parse_mapping(text: str | None) -> dict[str, str]:
    """The seed's YAML list of ``{type, templateRef: {name}}`` → {event type: template}.

    Malformed entries are skipped with a warning; the first entry for a type wins.
    """
    if not text or not text.strip():
        return {}
    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        logs.warning(f"{CONFIG_MAP} {MAPPING_KEY} is not valid YAML; ignoring it",
                     error=" ".join(str(exc).split())[:200])
        return {}
    if not isinstance(items, list):
        logs.warning(f"{CONFIG_MAP} {MAPPING_KEY} is not a YAML list; ignoring it")
        return {}
    mapping: dict[str, str] = {}
    for index, item in enumerate(items):
        ref = item.get("templateRef") if isinstance(item, dict) else None
        event_type = item.get("type") if isinstance(item, dict) else None
        name = ref.get("name") if isinstance(ref, dict) else None
        if not isinstance(event_type, str) or not isinstance(name, str) or not name.strip():
            logs.warning(f"{CONFIG_MAP} {MAPPING_KEY}: entry {index} needs type and "
                         "templateRef.name; skipped")
            continue
        mapping.setdefault(event_type.strip(), name.strip())
    return mapping


class TemplateStore:
    """``read_config()`` → the ConfigMap's data or ``None``; ``read_template(name)`` → the
    NotificationTemplate object or ``None``. Both raise typed errors on API trouble."""

    def __init__(self, read_config: Callable[[], Mapping[str, str] | None],
                 read_template: Callable[[str], dict[str, Any] | None], *,
                 namespace: str = "cpaas-system", ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read_config = read_config
        self.read_template = read_template
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock
        self._mapping: tuple[float, dict[str, str] | None] | None = None
        self._templates: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def mapping(self) -> dict[str, str] | None:
        with self._lock:
            if self._mapping and self.clock() - self._mapping[0] < self.ttl:
                return self._mapping[1]
        data = self.read_config()
        mapping = None if data is None else parse_mapping(data.get(MAPPING_KEY))
        with self._lock:
            self._mapping = (self.clock(), mapping)
        return mapping

    def template(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._templates.get(name)
            if hit and self.clock() - hit[0] < self.ttl:
                return hit[1]
        obj = self.read_template(name)
        with self._lock:
            self._templates[name] = (self.clock(), obj)
            if len(self._templates) > 512:  # names come from the mapping: stays small
                oldest = min(self._templates, key=lambda k: self._templates[k][0])
                del self._templates[oldest]
        return obj

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
            return Lookup(parse_template(obj), name)
        except RenderError as exc:
            return Lookup(None, name, missing=str(exc))
