"""``kubeevent lint FILE...``: what would go wrong once these documents are applied.

Every verdict comes from the functions' own code: the filter's ``problems`` (the checks
its ``Compiler`` runs: schema, owner annotation, channels, CEL, every problem at once),
the notifier's ``parse_mapping``, ``parse_template``, ``Renderer`` and ``message_for``,
the enricher's ``enrich`` for the sample event. This module only finds where in the
file each problem is written.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateSyntaxError

from . import bridge, crds, inputs, pipeline, samples
from .errors import FINDINGS, UserError
from .report import ERROR, WARNING, Finding, plural, print_findings, print_json, sort_key
from .yamlio import (
    Document,
    Position,
    YamlError,
    content_position,
    expand,
    load_file,
    loads,
    parse_path,
    read_text,
)

subs_mod = bridge.subscriptions
KUBEEVENT_ATTRIBUTES = frozenset({
    "specversion", "id", "source", "type", "time", "datacontenttype", "subject",
    "involvedobjectgroup", "involvedobjectversion", "involvedobjectkind",
    "involvedobjectname", "involvedobjectnamespace", "eventreason", "eventtype",
})
CHECKS = {
    "InvalidSpec": "schema", "OwnerMismatch": "owner", "NoChannels": "channels",
    "UnknownChannel": "channels", "InvalidCEL": "cel",
}
QUIET_ANNOTATION = subs_mod.QUIET_HOURS_ANNOTATION
REMINDERS_ANNOTATION = subs_mod.REMINDERS_ANNOTATION
_SPEC_PATH = re.compile(r"^(spec(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)")


def subscription_problems(obj: Any, engine: Any,
                          channels: tuple[str, ...] | None = None) -> list[Any]:
    """Every reason not to use ``obj``, by the checks ``Compiler.load`` runs, in its
    order (so the first is the reason ``load`` gives): for showing an author every
    problem at once. A check that needs what an earlier one refused is left out."""
    try:
        spec = subs_mod.check_spec(obj)
    except subs_mod.Invalid as exc:
        return [exc]
    found: list[Any] = []
    subscriber: Any = None
    try:
        subscriber = subs_mod.parse_subscriber(spec)
        subs_mod.check_owner(obj, subscriber)
    except subs_mod.Invalid as exc:
        found.append(exc)
    try:
        subs_mod.check_channels(obj, channels)
    except subs_mod.Invalid as exc:
        found.append(exc)
    objects, shape = subs_mod.check_subscriptions(spec)
    found.extend(shape)
    if subscriber is not None:
        found.extend(subs_mod.check_cel(objects, subscriber, engine)[1])
    return found



@dataclass
class Subscribed:
    """An event type a linted subscription asks for."""

    type: str
    position: Position
    document: str
    subscriber: dict[str, Any] | None


@dataclass
class Linter:
    engine: Any
    platform_url: str
    channels: tuple[str, ...] | None = None  # the channels a notifier serves
    findings: list[Finding] = field(default_factory=list)
    documents: int = 0
    subscribed: list[Subscribed] = field(default_factory=list)
    templates: inputs.TemplateSet = field(default_factory=inputs.TemplateSet)
    linted_templates: list[Document] = field(default_factory=list)
    checked: list[Document] = field(default_factory=list)  # for the server's dry run
    configs: list[Document] = field(default_factory=list)
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    # (group, kind) → CustomResourceDefinition: the schemas the filters' paths are
    # checked against (the stand-in for the seed's kind, --schema, linted CRDs, the cluster)
    crds: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    author: str = ""  # --as: who applies the documents (the ownership policy judges)
    author_groups: tuple[str, ...] = ()
    later: list[tuple[Document, Any, tuple[str | int, ...], str, str]] = field(
        default_factory=list)

    def add(self, severity: str, check: str, message: str, position: Position | None,
            doc: Document | str | None = None) -> None:
        label = doc.label if isinstance(doc, Document) else doc or ""
        self.findings.append(Finding(severity, check, message, position, label))

    # ------------------------------------------------------------------ documents

    def document(self, doc: Document) -> None:
        self.documents += 1
        for path, position in doc.duplicates:
            self.add(ERROR, "yaml", f"key {str(path[-1])!r} appears twice in one mapping "
                     "(kubectl refuses the document)", position, doc)
        what = inputs.role(doc)
        if what == "subscription":
            self.subscription(doc)
        elif what == "template":
            self.template(doc)
        elif what == "config":
            self.configs.append(doc)
        elif what == "crd":
            self.add_crd(doc.data)
        elif what == "configmap":
            self.add(WARNING, "kind", f"ConfigMap {doc.name!r} is not {inputs.CONFIG_NAME}: "
                     "not checked", doc.position, doc)
        else:
            self.add(ERROR, "kind", inputs.describe_unknown(doc).split(": ", 1)[-1],
                     doc.position, doc)

    def api_version(self, doc: Document, kind: str) -> bool:
        """False when the apiVersion is not one the project's functions read."""
        want = inputs.KATANOMI_API_VERSION
        got = doc.get("apiVersion")
        if got == want:
            return True
        shown = "is missing" if got is None else f"is {got!r}"
        self.add(ERROR, "schema", f"apiVersion {shown}; a {kind} is {want}",
                 doc.at("apiVersion") if got is not None else doc.position, doc)
        return False

    def schema(self, doc: Document, kind: str) -> None:
        for error in crds.validate(doc.api_version, kind, doc.data):
            where = doc.key_at(*error.path) if error.unknown else doc.at(*error.path)
            self.add(ERROR, "schema", error.message, where, doc)

    # --------------------------------------------------------------- subscriptions

    def subscription(self, doc: Document) -> None:
        self.checked.append(doc)
        self.api_version(doc, inputs.SUBSCRIPTION)
        self.schema(doc, inputs.SUBSCRIPTION)
        if not doc.name:
            self.add(ERROR, "schema", "metadata.name is missing", doc.at("metadata"), doc)
        if doc.get("metadata", "namespace"):
            self.add(WARNING, "schema", "a ClusterSubscription is cluster-scoped: "
                     "metadata.namespace is ignored", doc.at("metadata", "namespace"), doc)
        problems = subscription_problems(doc.data, self.engine, self.channels)
        for problem in problems:
            if isinstance(problem, subs_mod.InvalidCel):
                self.cel_problem(doc, problem)
            else:
                self.add(ERROR, CHECKS.get(problem.reason, "schema"),
                         f"not used ({problem.reason}): {problem.message}",
                         self.reason_position(doc, problem.reason, problem.message), doc)
        self.annotations(doc)
        self.policy(doc)
        subscriber = None
        if not problems:
            spec = subs_mod.check_spec(doc.data)
            subscriber = subs_mod.parse_subscriber(spec).as_json()
        self.entries(doc, subscriber)

    def policy(self, doc: Document) -> None:
        """The shipped ownership policy's own rules (manifests/policy), evaluated here
        with the filter's CEL engine for a CREATE by ``--as`` (an error when refused), or
        by the subscription's owner when no author is given (a warning: an admin may)."""
        author = self.author or str(doc.get("metadata", "annotations",
                                            subs_mod.OWNER_ANNOTATION) or "")
        if not author:
            return
        for message in policy_refusals(doc.data, author, self.author_groups):
            if self.author:
                self.add(ERROR, "policy", f"the admission policy refuses it from "
                         f"{author}: {message}", doc.position, doc)
            else:
                self.add(WARNING, "policy", f"the admission policy refuses it even from its "
                         f"owner {author} (an admin may create it): {message}",
                         doc.position, doc)

    def annotations(self, doc: Document) -> None:
        """The notifiers' per-subscription annotations, read by the notifiers' own
        parsers: one they cannot read is logged there and the defaults apply."""
        written = _dict(doc.get("metadata", "annotations"))
        quiet = written.get(QUIET_ANNOTATION)
        if isinstance(quiet, str):
            try:
                bridge.quiet.parse(quiet)
            except bridge.quiet.QuietHoursError as exc:
                self.add(WARNING, "annotation", f"{QUIET_ANNOTATION}: {exc}; the notifier "
                         "ignores it (QUIET_HOURS applies)",
                         doc.at("metadata", "annotations", QUIET_ANNOTATION), doc)
        reminders = written.get(REMINDERS_ANNOTATION)
        if isinstance(reminders, str):
            defaults = bridge.FollowConfig(remind_after=-1.0, remind_every=-1.0)
            if reminders.strip() and defaults.reminders(reminders) == (-1.0, -1.0):
                self.add(WARNING, "annotation", f"{REMINDERS_ANNOTATION} {reminders!r} is "
                         "not 'off' or '<after>,<every>' as durations (e.g. 30m,2h); the "
                         "notifier ignores it (its defaults apply)",
                         doc.at("metadata", "annotations", REMINDERS_ANNOTATION), doc)

    def reason_position(self, doc: Document, reason: str, message: str) -> Position:
        annotations = ("metadata", "annotations")
        if reason == "OwnerMismatch":
            return doc.at(*annotations, subs_mod.OWNER_ANNOTATION)
        if reason in ("NoChannels", "UnknownChannel"):
            return doc.at(*annotations, subs_mod.CHANNELS_ANNOTATION)
        match = _SPEC_PATH.match(message)
        if match is None:
            return doc.at("spec")
        return doc.at(*parse_path(match.group(1)))

    def cel_problem(self, doc: Document, problem: Any) -> None:
        """A filter that does not compile, at its place in the file."""
        path = parse_path(problem.where)
        position = doc.at(*path)
        if problem.position is not None:
            position = content_position(doc, path, *problem.position)
        self.add(ERROR, "cel", f"{problem.where}: {problem.error}", position, doc)

    def entries(self, doc: Document, subscriber: dict[str, Any] | None) -> None:
        """Filters that can never match, and the event types asked for."""
        for i, entry in enumerate(_list(doc.get("spec", "subscriptions"))):
            obj = _dict(_dict(entry).get("object"))
            kind = obj.get("kind") if isinstance(obj.get("kind"), str) else ""
            api_version = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else ""
            if kind and api_version:
                self.kinds.setdefault(kind.lower(), (kind, api_version))
            for j, event in enumerate(_list(_dict(entry).get("events"))):
                base = ("spec", "subscriptions", i, "events", j)
                event_type = _dict(event).get("type")
                if not isinstance(event_type, str) or not event_type.strip():
                    continue
                event_type = event_type.strip()
                where = doc.at(*base, "type")
                self.subscribed.append(Subscribed(event_type, where, doc.label, subscriber))
                problem = bridge.reach.event_type_problem(event_type, kind)
                if problem:
                    self.add(WARNING, "type", problem, where, doc)
                cel = _dict(_dict(event).get("filter")).get("cel")
                self.binding_slips(doc, cel, (*base, "filter", "cel"))
                if isinstance(cel, str) and kind and api_version:
                    self.later.append((doc, cel, (*base, "filter", "cel"), kind, api_version))
                exact = _dict(_dict(_dict(event).get("filter")).get("exact"))
                for key, value in exact.items():
                    name = str(key).lower()
                    at = doc.at(*base, "filter", "exact", str(key))
                    if name not in KUBEEVENT_ATTRIBUTES:
                        self.add(WARNING, "exact", f"exact filter {key!r}: enriched events have "
                                 "no such attribute, so this filter never matches", at, doc)
                    elif name == "involvedobjectkind" and kind and str(value) != kind:
                        self.add(WARNING, "exact", f"exact filter {key}: {value!r} differs "
                                 f"from the object kind {kind!r}: it never matches", at, doc)
                    elif name == "involvedobjectgroup" and api_version \
                            and str(value) != api_version.rpartition("/")[0]:
                        self.add(WARNING, "exact", f"exact filter {key}: {value!r} differs "
                                 f"from the object's group "
                                 f"{api_version.rpartition('/')[0]!r}: it never matches",
                                 at, doc)

    def binding_slips(self, doc: Document, cel: Any, path: tuple[str | int, ...]) -> None:
        """What a lost ``$(subscriber.…)`` leaves in a filter (the filter's own check,
        ``reach.binding_slips``): legal CEL, a filter that names nobody."""
        if not isinstance(cel, str):
            return
        for message in bridge.reach.binding_slips(cel):
            self.add(WARNING, "binding", message, doc.at(*path), doc)

    def add_crd(self, crd: Any) -> None:
        spec = crd.get("spec") if isinstance(crd, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("names"), dict):
            self.crds[(str(spec.get("group") or ""), str(spec["names"].get("kind") or ""))] \
                = crd

    def schema_for(self, api_version: str, kind: str) -> Any:
        group, _, version = api_version.rpartition("/")
        crd = self.crds.get((group, kind))
        return bridge.reach.schema_of(crd, version) if crd is not None else None

    def paths(self) -> None:
        """Each filter's paths against its kind's schema (once every CRD is known)."""
        for doc, cel, path, kind, api_version in self.later:
            schema = self.schema_for(api_version, kind)
            for hint in bridge.reach.field_hints(cel, schema, kind, ""):
                position = doc.at(*path)
                if hint.position is not None:
                    position = content_position(doc, path, *hint.position)
                self.add(WARNING, "field", hint.message, position, doc)

    # ------------------------------------------------------------------- templates

    def template(self, doc: Document) -> None:
        inputs.prepare_template(doc, self.platform_url)
        self.checked.append(doc)
        self.api_version(doc, inputs.TEMPLATE)
        self.schema(doc, inputs.TEMPLATE)
        if not doc.name:
            self.add(ERROR, "schema", "metadata.name is missing", doc.at("metadata"), doc)
            return
        previous = self.templates.add(doc)
        if previous is not None:
            self.add(WARNING, "template", f"another NotificationTemplate named {doc.name!r} "
                     f"is at {previous.position}: the later one wins", doc.position, doc)
        self.linted_templates.append(doc)

    def compiled(self, doc: Document, renderer: Any) -> Any:
        try:
            spec = bridge.render.parse_template(doc.data)
        except bridge.render.RenderError as exc:
            self.add(ERROR, "template", str(exc), doc.at("spec", "corpwechat"), doc)
            return None
        try:
            return renderer.compile(spec)
        except bridge.render.RenderError as exc:
            self.add(ERROR, "template", str(exc), syntax_position(doc, spec, renderer), doc)
            return None

    # ------------------------------------------------------------------- mapping

    def finish(self, config: inputs.Config | None, sample: Any | None) -> None:
        self.paths()
        if config is not None:
            for message, position in config.warnings:
                self.add(WARNING, "mapping", message, position)
        self.mapping(config)
        renderer = bridge.render.Renderer()
        for doc in self.linted_templates:
            compiled = self.compiled(doc, renderer)
            if compiled is None:
                continue
            types = config.types_for(doc.name) if config is not None else []
            if config is not None and not types:
                self.add(WARNING, "mapping", f"no event type maps to this template in "
                         f"{inputs.CONFIG_NAME} {inputs.MAPPING_KEY} ({config.source}): it is "
                         "never used", doc.position, doc)
            for event_type in types or [guess_type(doc.name)]:
                self.render(doc, compiled, renderer, event_type, sample)

    def mapping(self, config: inputs.Config | None) -> None:
        if config is None:
            if self.subscribed or self.linted_templates:
                self.add(WARNING, "mapping", f"no {inputs.CONFIG_NAME} given (--config): "
                         "the template mapping is not checked", None)
            return
        seen: set[tuple[str, str]] = set()
        for item in self.subscribed:
            if (item.type, item.document) in seen:
                continue
            seen.add((item.type, item.document))
            name = config.mapping.get(item.type)
            if name is None:
                if samples.split_type(item.type) is not None:
                    self.add(WARNING, "mapping", f"no template maps event type {item.type} "
                             f"in {inputs.CONFIG_NAME} {inputs.MAPPING_KEY} ({config.source}):"
                             " the notifier sends its built-in message", item.position,
                             item.document)
                continue
            if self.templates.docs and name not in self.templates.docs:
                self.add(WARNING, "mapping", f"event type {item.type} maps to template "
                         f"{name!r}, which is not among the given templates", item.position,
                         item.document)

    def render(self, doc: Document, compiled: Any, renderer: Any, event_type: str,
               sample: Any | None) -> None:
        event = sample if sample is not None else samples.enriched_sample(event_type,
                                                                          self.kinds)
        subscriber = next((s.subscriber for s in self.subscribed
                           if s.type == event_type and s.subscriber), samples.SAMPLE_SUBSCRIBER)
        split = samples.split_type(event_type)
        short = ".".join(split) if split else event_type
        against = "the given event" if sample is not None else f"a sample {short} event"
        templates = bridge.templates
        message, _, problem = templates.message_for(
            templates.Selected(doc.name, compiled), renderer, pipeline.event_json(event),
            subscriber, self.platform_url)
        if problem:
            self.add(ERROR, "render", f"fails against {against}: {problem} (the notifier "
                     "would send its built-in message)", doc.at("spec", "corpwechat"), doc)
            return
        self.rendered(doc, compiled.spec, message, against)

    def rendered(self, doc: Document, spec: Any, message: Any, against: str) -> None:
        section = message.section()
        if spec.msgtype in ("textcard", "template_card") and message.msgtype != spec.msgtype:
            self.add(WARNING, "render", f"the url renders empty against {against}: the "
                     f"{spec.msgtype} is sent as a text message",
                     doc.at("spec", "corpwechat", "url"), doc)
        url = section.get("url", "")
        if url and not url.startswith(("http://", "https://")):
            self.add(WARNING, "render", f"url is not an absolute link against {against} "
                     f"({url[:60]!r}): set --platform-url (PLATFORM_URL)",
                     doc.at("spec", "corpwechat", "url"), doc)
        for name, value in section.items():
            if value.endswith(bridge.render.CUT_MARK) and name != "url":
                self.add(WARNING, "render", f"{name} is cut to WeCom's limit against {against}",
                         doc.at("spec", "corpwechat"), doc)


# ----------------------------------------------------------------------- helpers


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def guess_type(template: str) -> str:
    """``kubeevent.<kind>.<reason>`` → its event type (the seed's naming)."""
    parts = template.split(".")
    if len(parts) == 3 and parts[0] == "kubeevent":
        return f"{pipeline.ENRICHED_PREFIX}{parts[1]}.{parts[2]}{pipeline.ENRICHED_SUFFIX}"
    return f"{pipeline.ENRICHED_PREFIX}artifactpromotionrun.approvalpending" \
        f"{pipeline.ENRICHED_SUFFIX}"


def syntax_position(doc: Document, spec: Any, renderer: Any) -> Position:
    """Where the first field with a Jinja2 syntax error has it."""
    for name, source in spec.sources().items():
        try:
            renderer.env.parse(source)
        except TemplateSyntaxError as exc:
            return content_position(doc, ("spec", "corpwechat", name), exc.lineno or 1, 1)
    return doc.at("spec", "corpwechat")


def lint_files(linter: Linter, files: Iterable[str]) -> list[str]:
    sources: list[str] = []
    for path in files:
        source, text = read_text(path)
        sources.append(source)
        try:
            docs = loads(text, source)
        except YamlError as exc:
            linter.add(ERROR, "yaml", f"invalid YAML: {exc.problem}", exc.position)
            continue
        if not docs:
            linter.add(WARNING, "yaml", "no document in this file", Position(source, 1, 1))
        for doc in docs:
            linter.document(doc)
    return sources


def run(args: argparse.Namespace) -> int:
    bridge.capture_logs(args.verbose)
    if args.object and not args.event:
        raise UserError("--object needs --event")
    if sum(1 for f in args.files if f == "-") > 1:
        raise UserError("'-' (standard input) can be given once")
    linter = Linter(bridge.engine(args.cel_engine), inputs.platform_url(args.platform_url),
                    bridge.known_channels(args.channels), author=args.author or "",
                    author_groups=tuple(args.author_groups or ()))
    files = expand(args.files)
    sample = None
    if args.event:
        event = pipeline.read_event(args.event)
        obj = pipeline.single_document(args.object, "--object").data if args.object else None
        sample = pipeline.enriched_event(event, obj, replace_object=obj is not None)
    if args.templates:
        for doc in inputs.gather([args.templates], lambda d: inputs.role(d) == "template"):
            linter.templates.docs.setdefault(
                doc.name, inputs.prepare_template(doc, linter.platform_url))
    for path in STAND_INS + list(args.schema or []):
        for doc in load_file(str(path)):
            if inputs.role(doc) != "crd":
                raise UserError(f"--schema {path}: not a CustomResourceDefinition")
            linter.add_crd(doc.data)
    kube = None
    if args.kubeconfig or args.server:
        from .simulate import connect

        kube = connect(args.kubeconfig)
    if kube is not None:
        for crd in server_crds(kube):
            linter.add_crd(crd)
    sources = lint_files(linter, files)
    if kube is not None and args.server:
        dry_run(linter, kube)
    config = choose_config(linter, args.config)
    linter.finish(config, sample)
    findings = sorted(linter.findings, key=sort_key)
    errors = sum(1 for f in findings if f.severity == ERROR)
    warnings = len(findings) - errors
    failed = errors > 0 or (args.strict and warnings > 0)
    if args.json:
        print_json({
            "ok": not failed, "errors": errors, "warnings": warnings, "files": sources,
            "documents": linter.documents,
            "mapping": config.source if config is not None else None,
            "findings": [f.as_json() for f in findings],
        })
    else:
        mapping = f"; template mapping from {config.source}" if config is not None else ""
        print_findings(findings, f"{plural(errors, 'error')}, {plural(warnings, 'warning')} "
                       f"in {plural(linter.documents, 'document')} "
                       f"({plural(len(sources), 'file')}){mapping}")
    return FINDINGS if failed else 0


STAND_INS = [bridge.ROOT / "dev" / "cluster" / "crds" / "artifactpromotionruns.yaml"]
POLICY = bridge.MANIFESTS / "policy" / "subscription-owner-policy.yaml"
# ``m[?'key'].orValue(d)`` (CEL's optional syntax, which the API server has and the
# filter's engines do not) as the same test written without it.
_OPTIONAL = re.compile(r"([A-Za-z_][\w.]*)\[\?'([^']*)'\]\.orValue\(([^()]*)\)")


def _without_optionals(expression: str) -> str:
    return _OPTIONAL.sub(lambda m: f"(({m[1]}.exists(k, k == '{m[2]}')) ? {m[1]}['{m[2]}'] "
                                   f": {m[3]})", expression)


def policy_refusals(obj: Any, user: str, groups: tuple[str, ...] = ()) -> list[str]:
    """What the ValidatingAdmissionPolicy in manifests/policy says of ``user`` creating
    ``obj``: the messages of the validations that fail (none: admitted). Evaluated with
    cel-cpp (the filter's cel-expr engine), as the API server's cel-go would."""
    try:
        from cel_expr_python import cel
    except ImportError:  # a platform without its wheels: only the server can say
        return []

    policy = next(d for d in load_file(str(POLICY))
                  if isinstance(d.data, dict)
                  and d.data.get("kind") == "ValidatingAdmissionPolicy").data
    names = ("object", "oldObject", "request", "variables")
    env = cel.NewEnv(variables={name: cel.Type.DYN for name in names})
    values: dict[str, Any] = {
        "object": obj, "oldObject": None, "variables": {},
        "request": {"operation": "CREATE", "userInfo": {"username": user,
                                                        "groups": list(groups)}}}

    def value(expression: str) -> Any:
        result = env.compile(_without_optionals(expression)).eval(env.Activation(values))
        if result.type() == cel.Type.ERROR:
            raise ValueError(str(result.value()))
        return _plain(result)

    refused: list[str] = []
    try:
        for variable in policy["spec"].get("variables") or []:
            values["variables"] = {**values["variables"],
                                   variable["name"]: value(variable["expression"])}
        for rule in policy["spec"]["validations"]:
            if value(rule["expression"]) is not True:
                said = rule.get("messageExpression")
                refused.append(str(value(said)) if said
                               else str(rule.get("message") or "refused"))
    except Exception as exc:  # the shipped policy changed beyond what is evaluated here
        refused.append(f"(the rest of the policy could not be evaluated here: "
                       f"{' '.join(str(exc).split())[:200]}; --server asks the API server)")
    return refused


def _plain(result: Any) -> Any:
    """A cel-expr value as Python's."""
    from cel_expr_python import cel

    kind = result.type()
    if kind == cel.Type.LIST:
        return [_plain(item) for item in result.value()]
    if kind == cel.Type.MAP:
        return {_plain(k): _plain(v) for k, v in result.value().items()}
    return result.value()



def server_crds(kube: Any) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition the cluster has (its schemas win over the stand-in)."""
    from subscription_filter.shared.errors import FunctionError
    from subscription_filter.shared.kube import AccessDenied, Unavailable

    try:
        return kube.list_all("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    except AccessDenied:
        return []  # a subscriber's own credentials: the stand-in and --schema remain
    except Unavailable as exc:
        raise UserError(f"--kubeconfig: the API server cannot be reached ({exc.reason})") \
            from None
    except FunctionError as exc:
        raise UserError(f"--kubeconfig: cannot list customresourcedefinitions: "
                        f"{exc.reason}") from None


def dry_run(linter: Linter, kube: Any) -> None:
    """Each ClusterSubscription and NotificationTemplate sent to the API server with
    ``dryRun=All`` (as ``kubectl apply --dry-run=server``): its schema, the admission
    policies (the ownership policy judges the credentials' user) and webhooks answer;
    nothing is stored. A refusal is an error at the document, in the server's own words
    (its Status message: a policy's reason is the point of asking), so this one call reads
    the client's exception itself rather than the functions' typed errors."""
    from kubernetes.client.rest import ApiException

    custom = kube.custom()
    for doc in linter.checked:
        body = doc.data
        name = str((body.get("metadata") or {}).get("name") or "")
        kind = body.get("kind")
        try:
            if kind == inputs.SUBSCRIPTION:
                call = (custom.patch_cluster_custom_object, ("core.katanomi.dev", "v1alpha1",
                                                             "clustersubscriptions", name))
            else:
                namespace = str((body.get("metadata") or {}).get("namespace")
                                or "cpaas-system")
                call = (custom.patch_namespaced_custom_object,
                        ("core.katanomi.dev", "v1alpha1", namespace,
                         "notificationtemplates", name))
            call[0](*call[1], body, dry_run="All", field_manager="kubeevent-lint",
                    force=True, _content_type="application/apply-patch+yaml",
                    _request_timeout=kube.timeout)
        except ApiException as exc:
            message = _server_message(exc)
            linter.add(ERROR, "server", f"the API server refuses it (dryRun=All): {message}",
                       doc.position, doc)
        except Exception as exc:  # no answer at all: nothing about this file is known
            raise UserError(f"the API server cannot be reached for the dry run "
                            f"({type(exc).__name__})") from None


def _server_message(exc: Any) -> str:
    import json

    try:
        said = json.loads(exc.body or "{}").get("message") or ""
    except ValueError:
        said = ""
    return " ".join(str(said or f"{exc.status} {exc.reason}").split())[:500]


def choose_config(linter: Linter, option: str | None) -> inputs.Config | None:
    """``--config``, else a katanomi-config among the linted files, else the project's."""
    if option:
        return inputs.load_config(option)
    if linter.configs:
        for extra in linter.configs[:-1]:
            linter.add(WARNING, "mapping", f"more than one {inputs.CONFIG_NAME}: the one at "
                       f"{linter.configs[-1].position} is used", extra.position, extra)
        return inputs.config_from(linter.configs[-1])
    return inputs.default_config()
