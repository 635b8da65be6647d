"""(Over 400 lines on purpose: every value a template prints is made safe here, for every
channel, so no channel renders by other rules.)

NotificationTemplate rendering for every channel: a Jinja2 sandbox, values made safe
for where they land, fields fitted to a channel's limits, and the built-in message.

Templates are written by cluster administrators, the values they print come from events
and objects. Values are data and are never compiled; the template itself runs in an
immutable sandbox where every underscore attribute, every unsafe callable and every
mutating method is refused with a ``SecurityError`` (the caller then sends the built-in
message and logs a warning). Undefined values chain (``a.b.c | default('-')`` works even
when ``a`` is missing) and ``None`` prints as an empty string, so a template survives an
object with missing fields. A template's runtime, memory and output are bounded.

Every value a template prints (``{{ … }}``) is made safe for where it lands, whoever wrote
it (a requester writes ``spec.artifact``): control, bidi and zero-width characters are
removed and line breaks become spaces (``clean``), then it is escaped by the escaper the
channel gives for the field (``plain``, ``html``, ``url``, or its own). The template's own
text is kept. A field that would not fit the channel's limit is fitted by cutting the
longest values first, so short ones (the object's name and namespace, the target) stay
whole. A channel supplies its template section (``TemplateSource``: a name and the
fields' sources), its escapers and limits, and builds its message from the fields.
"""

from __future__ import annotations

import re
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from jinja2 import ChainableUndefined, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from .cache import Cache

CUT_MARK = "…"
# Rendering stops once a field's output grows past this many characters.
MAX_RENDER_CHARS = 64 * 1024
# Largest string/list a template may build with ``*``, largest exponent for ``**``.
MAX_REPEAT = 100_000
MAX_EXPONENT = 256
# Largest string a template may build by any other means (``+``, ``~``, ``%``, filters).
MAX_STRING = 1_000_000
# Largest width or count a template may pass to ``center``, ``'%9s'``, ``indent``...
MAX_WIDTH = 10_000
# One field's rendering: at most this many template lines run, for at most this long.
MAX_STEPS = 1_000_000
MAX_SECONDS = 2.0
_FORMAT_NUMBERS = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class RenderError(Exception):
    """A template that cannot be used: invalid, refused by the sandbox, or failing."""


def truncate_utf8(text: str, limit: int, mark: str = CUT_MARK) -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, cut on a character boundary and ending
    with ``mark`` when something was cut. Unencodable code points become ``?``."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    tail = mark.encode("utf-8")
    if len(tail) > limit:
        tail = b""
    # Only the last character can be split by the cut; "ignore" drops its partial bytes.
    head = data[: limit - len(tail)].decode("utf-8", errors="ignore")
    return head + tail.decode("utf-8")


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="replace"))


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_STRING:
        raise SecurityError(f"{what} would build more than {MAX_STRING} items")
    return value


def _check_widths(numbers: Any, what: str) -> None:
    for number in numbers:
        if isinstance(number, int) and not isinstance(number, bool) and number > MAX_WIDTH:
            raise SecurityError(f"{what}: {number} is over the limit of {MAX_WIDTH}")


def _check_format(text: Any) -> None:
    """``'%1000000000s' % x`` would allocate a gigabyte: the widths in a format, and
    ``*`` widths, are bounded."""
    if not isinstance(text, str):
        return
    for width, precision in _FORMAT_NUMBERS.findall(text):
        for number in (width, precision):
            if number == "*":
                raise SecurityError("'*' widths are not allowed in a format")
            if number:
                _check_widths([int(number)], "a format width")
    if "{" in text:  # str.format: {:>1000000000}
        _check_widths([int(n) for n in re.findall(r"\d+", text)], "a format width")


def _check_replace(text: Any, old: Any, new: Any) -> None:
    """``s.replace(old, new)`` (method or filter) may not grow past ``MAX_STRING``: checked
    before it allocates."""
    if not isinstance(text, str) or not isinstance(new, str):
        return
    old = old if isinstance(old, str) else ""
    grows = (text.count(old) if old else len(text) + 1) * len(new)
    if len(text) + grows > MAX_STRING:
        raise SecurityError(f"replace would build more than {MAX_STRING} characters")


# str methods whose arguments decide how much they allocate.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _bounded_filter(name: str) -> Any:
    original = FILTERS[name]

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_widths([*args[1:], *kwargs.values()], f"the filter {name}")
        if name == "format" and args:
            _check_format(args[0])
        if name == "replace" and len(args) >= 3:
            _check_replace(str(args[0]), args[1], args[2])
        return _check_size(original(*args, **kwargs), f"the filter {name}")

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """``a ~ b`` joins through the environment, which bounds the result."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Budget:
    """Counts the lines template code runs in this thread and stops it (``SecurityError``)
    past ``MAX_STEPS`` or ``MAX_SECONDS``: loops that print nothing are bounded too."""

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def calls(self, frame: Any, event: str, arg: Any) -> Any:
        return self.lines if frame.f_code.co_filename == "<template>" else None

    def lines(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise SecurityError(f"the template ran more than {MAX_STEPS} steps")
            if self.steps % 1000 == 0 and time.monotonic() > self.deadline:
                raise SecurityError(f"the template ran longer than {MAX_SECONDS:g} s")
        return self.lines


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, made loud and bounded."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator

    @staticmethod
    def bounded_join(values: Any) -> str:
        parts = [str(v) for v in values]
        if sum(len(p) for p in parts) > MAX_STRING:
            raise SecurityError(f"'~' would build more than {MAX_STRING} characters")
        return "".join(parts)

    def call(__self, __context: Any, __obj: Any,
             *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                _check_widths([*args, *kwargs.values()], f"str.{name}")
            elif name == "replace" and len(args) >= 2:
                _check_replace(owner, args[0], args[1])
        return _check_size(super().call(__context, __obj, *args, **kwargs), "a call")

    @staticmethod
    def _refuse_private(obj: Any, name: Any) -> None:
        # Keys of data (dicts from the event) are plain values; any other name with a
        # leading underscore is an attempt to reach Python internals, even on an Undefined.
        if isinstance(name, str) and name.startswith("_") \
                and not (isinstance(obj, dict) and name in obj):
            raise SecurityError(f"access to {name!r} of {type(obj).__name__!r} is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        self._refuse_private(obj, attribute)
        if isinstance(obj, str) and attribute in ("format", "format_map"):
            _check_format(obj)  # Jinja hands out its own wrapper of str.format
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self._refuse_private(obj, argument)
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that fails only when used; refuse at once,
        # so an attempt never renders silently as an empty string.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > MAX_REPEAT:
                    raise SecurityError("the result of '*' would be too large")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT \
                and left not in (0, 1, -1):
            raise SecurityError("the exponent of '**' is too large")
        if operator == "%":
            _check_format(left)
        if operator == "+" and isinstance(left, (str, list, tuple)) \
                and isinstance(right, (str, list, tuple)) and len(left) + len(right) > MAX_STRING:
            raise SecurityError(f"'+' would build more than {MAX_STRING} items")
        return _check_size(super().call_binop(context, operator, left, right), f"'{operator}'")


# Characters that change how text around them is shown (bidi overrides and isolates, marks)
# or hide in it (zero-width): removed from every value.
_INVISIBLE = frozenset("\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d"
                       "\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069"
                       "\ufeff\u180e")
_BREAKS = frozenset("\n\r\t\v\f\u0085\u2028\u2029")


def clean(text: str) -> str:
    """``text`` without control, bidi and zero-width characters; line breaks as spaces."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(" " if c in _BREAKS else c for c in text
                   if c in _BREAKS or (c not in _INVISIBLE and unicodedata.category(c)
                                       not in ("Cc", "Cf", "Cs", "Co", "Cn")))


def plain(text: str) -> str:
    """For plain text (and any title): no tag can form, so no ``<a href>``."""
    return text.replace("<", "＜").replace(">", "＞")


def html(text: str) -> str:
    """For HTML: WeCom's textcard description subset (``<div class=…>``), an email's HTML
    part."""
    return str(escape(text))


def url(text: str) -> str:
    """For a link: what would end or change it (spaces, quotes, ``<``) percent-encoded."""
    return quote(text, safe=":/?#[]@!$&'()*+,;=%-._~")


class _Values(threading.local):
    """The escaping, and the cap on one value's length, of the field being rendered."""

    escape: Callable[[str], str] = plain
    cap: int | None = None
    longest: int = 0


_VALUES = _Values()


def _finalize(value: Any) -> Any:
    """Applied to every value a template prints."""
    if value is None:
        return ""
    # A value the template escaped itself (``| e``) is escaped here like any other.
    text = clean(value.unescape() if isinstance(value, Markup) else str(value))
    _VALUES.longest = max(_VALUES.longest, len(text))
    cap = _VALUES.cap
    if cap is not None and len(text) > cap:
        text = text[:max(cap - 1, 0)] + CUT_MARK
    return _VALUES.escape(text)


def new_environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(autoescape=False, undefined=ChainableUndefined, finalize=_finalize,
                   keep_trailing_newline=False)
    # Helpers that only widen the attack surface of a notification template.
    for name in ("lipsum", "cycler", "joiner"):
        env.globals.pop(name, None)
    for name in ("center", "indent", "wordwrap", "format", "replace", "truncate", "join",
                 "batch", "slice", "filesizeformat", "string", "xmlattr", "tojson"):
        env.filters[name] = _bounded_filter(name)
    return env


class TemplateSource(Protocol):
    """A channel's section of a NotificationTemplate, not yet rendered: hashable (compiled
    once per source)."""

    name: str

    def sources(self) -> dict[str, str]: ...

    def __hash__(self) -> int: ...


@dataclass(frozen=True)
class Section:
    """A channel's section of a NotificationTemplate, read: the template's name, the
    section's other keys (``raw``) and its template fields that are set (``fields``)."""

    name: str
    raw: Mapping[str, Any]
    fields: dict[str, str]


def template_section(obj: Mapping[str, Any], section: str, fields: tuple[str, ...]
                     ) -> Section:
    """``spec.<section>`` of a NotificationTemplate object; ``RenderError`` when it is
    missing or one of ``fields`` is not a string."""
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = str(metadata.get("name") or "")
    spec = obj.get("spec")
    found = spec.get(section) if isinstance(spec, dict) else None
    if not isinstance(found, dict):
        raise RenderError(f"template {name!r} has no spec.{section}")
    values: dict[str, str] = {}
    for key in fields:
        value = found.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RenderError(f"template {name!r}: spec.{section}.{key} must be a string")
        values[key] = value
    return Section(name, found, values)


@dataclass(frozen=True)
class Compiled:
    spec: Any  # the TemplateSource
    templates: dict[str, Any]
    uses_subscriber: bool


class Renderer:
    """Compiles templates once (cached by source) and renders them in the sandbox."""

    def __init__(self, cache_size: int = 256) -> None:
        self.env = new_environment()
        self._cache: Cache[Any, Compiled] = Cache(cache_size)

    def compile(self, spec: TemplateSource) -> Compiled:
        return self._cache.get_or(spec, lambda: self._compile(spec))

    def _compile(self, spec: TemplateSource) -> Compiled:
        templates: dict[str, Any] = {}
        uses_subscriber = False
        for key, source in spec.sources().items():
            try:
                ast = self.env.parse(source)
                uses_subscriber |= "subscriber" in meta.find_undeclared_variables(ast)
                templates[key] = self.env.from_string(source)
            except TemplateError as exc:
                raise RenderError(f"template {spec.name!r}: {key}: "
                                  f"{type(exc).__name__}: {exc}") from None
        return Compiled(spec, templates, uses_subscriber)

    def render_fields(self, compiled: Compiled, context: Mapping[str, Any],
                      escaper: Callable[[str], Callable[[str], str]],
                      limit: Callable[[str, Mapping[str, str]], int | None],
                      last: tuple[str, ...] = ()) -> dict[str, str]:
        """Each field rendered, its values escaped by ``escaper(field)`` and fitted to
        ``limit(field, fields rendered before it)`` bytes (``None``: never cut); the
        fields in ``last`` are rendered after the others (they share their room)."""
        values: dict[str, str] = {}
        for key in sorted(compiled.templates, key=lambda k: k in last):
            values[key] = self._fitted(compiled, key, context, escaper(key),
                                       limit(key, values))
        return values

    def _fitted(self, compiled: Compiled, key: str, context: Mapping[str, Any],
                escape_as: Callable[[str], str], limit: int | None) -> str:
        """The field rendered whole, or, when it would not fit ``limit`` bytes, with each
        value cut to the longest length that fits: long values are cut first, short ones
        (a name, a namespace, the target) are left whole."""
        text = self._render_field(compiled, key, context, escape_as, None)
        longest = _VALUES.longest
        if limit is None or utf8_len(text) <= limit:
            return text
        low, high, best = 1, longest, None
        while low <= high:
            cap = (low + high) // 2
            candidate = self._render_field(compiled, key, context, escape_as, cap)
            if utf8_len(candidate) <= limit:
                best, low = candidate, cap + 1
            else:
                high = cap - 1
        return best if best is not None else self._render_field(compiled, key, context,
                                                                escape_as, 1)

    @staticmethod
    def _render_field(compiled: Compiled, key: str, context: Mapping[str, Any],
                      escape_as: Callable[[str], str], cap: int | None) -> str:
        template = compiled.templates[key]
        budget = _Budget()
        previous = sys.gettrace()
        _VALUES.escape, _VALUES.cap, _VALUES.longest = escape_as, cap, 0
        sys.settrace(budget.calls)  # this thread only
        try:
            return _bounded(template.generate(dict(context)))
        except SecurityError as exc:
            raise RenderError(f"template {compiled.spec.name!r}: {key}: refused by the "
                              f"sandbox: {exc}") from None
        except Exception as exc:  # any failure of a template means: use the fallback
            raise RenderError(f"template {compiled.spec.name!r}: {key}: "
                              f"{type(exc).__name__}: {exc}") from None
        finally:
            sys.settrace(previous)
            _VALUES.escape, _VALUES.cap = plain, None


def _bounded(chunks: Any) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_RENDER_CHARS:
            break  # the rest would be cut by the channel's limits anyway
    return "".join(parts)[:MAX_RENDER_CHARS]


def template_context(event: Mapping[str, Any], subscriber: Mapping[str, Any] | None,
                     platform_url: str) -> dict[str, Any]:
    """The names a template sees (docs/design.md §5)."""
    return {"event": event, "subscriber": subscriber or {}, "platform_url": platform_url}


def _dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _first(*values: Any) -> str:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


# The longest a value of the built-in message may be (a name or namespace is at most 253).
FALLBACK_VALUE = 253
FALLBACK_MESSAGE = 600


def console_link(platform_url: str, kind: str, namespace: str, name: str) -> str:
    """Where the console shows an object: the run page for an ArtifactPromotionRun."""
    if not platform_url:
        return ""
    if kind.lower() == "artifactpromotionrun" and namespace and name:
        return f"{platform_url}/console-devops/workspace/{url(namespace)}/" \
               f"artifactpromotionruns/{url(name)}"
    return platform_url


@dataclass(frozen=True)
class Fallback:
    """The built-in message, before a channel fits it: a title, plain-text lines, a link."""

    title: str
    content: str
    link: str


def fallback(event: Mapping[str, Any], platform_url: str = "") -> Fallback:
    """The built-in message, used when no template applies. It cannot fail."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    kube_event = data.get("event") if isinstance(data.get("event"), dict) else {}
    obj = data.get("object") if isinstance(data.get("object"), dict) else {}
    involved = _dig(kube_event, "involvedObject") or _dig(kube_event, "regarding") or {}
    kind = _first(event.get("involvedobjectkind"), obj.get("kind"), _dig(involved, "kind"))
    namespace = _first(event.get("involvedobjectnamespace"), _dig(obj, "metadata", "namespace"),
                       _dig(involved, "namespace"))
    name = _first(event.get("involvedobjectname"), _dig(obj, "metadata", "name"),
                  _dig(involved, "name"))
    reason = _first(kube_event.get("reason"), event.get("eventreason"))
    severity = _first(event.get("eventtype"), kube_event.get("type"))
    message = _first(kube_event.get("message"), kube_event.get("note"))
    # Anyone who may create Events, or write the object, wrote these: made plain text,
    # each capped so the object and the link always fit.
    kind, namespace, name, reason, severity = (
        plain(clean(v))[:FALLBACK_VALUE] for v in (kind, namespace, name, reason, severity))
    message = plain(clean(message))
    if len(message) > FALLBACK_MESSAGE:
        message = message[:FALLBACK_MESSAGE - 1] + CUT_MARK
    target = "/".join(part for part in (namespace, name) if part) or "-"
    lines = [
        f"事件 Event: {reason or '-'}" + (f" ({severity})" if severity else ""),
        f"对象 Object: {kind or '-'} {target}",
        f"类型 Type: {plain(clean(_first(event.get('type'))))[:FALLBACK_VALUE] or '-'}",
    ]
    if message:
        # The Event's own words (anyone who may create Events wrote them): quoted as such.
        lines.append(f"事件原文 The Event says: “{message}”")
    return Fallback(
        title=f"【通知 Notification】{kind or 'Event'} {target}: {reason or '-'}",
        content="\n".join(lines),
        link=console_link(platform_url, kind, namespace, name),
    )
