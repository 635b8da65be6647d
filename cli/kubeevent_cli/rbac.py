"""``--rbac``: may a subscriber ``get`` the involved object?

The filter asks the API server (SubjectAccessReview) and drops recipients who may not
read the object. Offline the answer comes from the option:

* ``allow`` (default): everyone may; ``deny``: nobody may.
* ``live``: the filter's own ``AccessReviewer`` against the cluster of ``--kubeconfig``.
* a rules FILE (YAML)::

      allow:                      # rules that allow
      - user: admin               # the subscriber's name (a User or a Group)
        namespace: devops         # optional: the object's namespace
        resource: artifactpromotionruns   # optional: kind, plural or plural.group
      deny:                       # rules that deny; a matching deny wins
      - user: alice
      default: deny               # optional: when no rule matches; default: deny when
                                  # there are allow rules, else allow

  Each field may be one value or a list; ``*`` or a missing field matches anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import bridge
from .errors import UserError
from .yamlio import load_file

FIELDS = ("user", "namespace", "resource", "name")


@dataclass(frozen=True)
class Target:
    """The object asked about (the filter's ``rbac.Target`` fields, plus the kind)."""

    group: str
    version: str
    resource: str
    kind: str
    namespace: str
    name: str

    def describe(self) -> str:
        plural = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"get {plural} {self.name}{where}"


class Policy(Protocol):
    description: str

    def target(self, enriched: Any) -> Target: ...

    def decide(self, subscriber: Any, target: Target) -> tuple[bool, str]: ...


def guess_plural(kind: str) -> str:
    """The resource name of a kind without asking discovery (for rule matching only)."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def offline_target(enriched: Any) -> Target:
    return Target(enriched.group, enriched.version, guess_plural(enriched.kind), enriched.kind,
                  enriched.namespace, enriched.name)


class Fixed:
    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.description = f"--rbac {'allow' if allowed else 'deny'}"

    def target(self, enriched: Any) -> Target:
        return offline_target(enriched)

    def decide(self, subscriber: Any, target: Target) -> tuple[bool, str]:
        return self.allowed, f"{'allowed' if self.allowed else 'denied'} by {self.description}"


@dataclass(frozen=True)
class Rule:
    where: str
    values: Mapping[str, tuple[str, ...]]

    def matches(self, subscriber: Any, target: Target) -> bool:
        resource_names = {target.kind.lower(), target.resource}
        if target.group:
            resource_names |= {f"{n}.{target.group}" for n in list(resource_names)}
        actual = {
            "user": {subscriber.name},
            "namespace": {target.namespace},
            "resource": resource_names,
            "name": {target.name},
        }
        for key, wanted in self.values.items():
            if "*" in wanted:
                continue
            have = actual[key]
            if key == "resource":
                if not {w.lower() for w in wanted} & have:
                    return False
            elif not set(wanted) & have:
                return False
        return True

    def describe(self) -> str:
        shown = ", ".join(f"{k} {'/'.join(v)}" for k, v in self.values.items())
        return f"{self.where} ({shown or 'any'})"


class Rules:
    def __init__(self, path: str) -> None:
        docs = load_file(path)
        if len(docs) != 1 or not isinstance(docs[0].data, dict):
            raise UserError(f"{path}: --rbac FILE must be one mapping with allow/deny rules")
        data: dict[str, Any] = docs[0].data
        unknown = set(data) - {"allow", "deny", "default"}
        if unknown:
            raise UserError(f"{docs[0].at(sorted(unknown)[0])}: unknown key "
                            f"{sorted(unknown)[0]!r} (expected allow, deny, default)")
        self.allow = self._rules(data, "allow", docs[0])
        self.deny = self._rules(data, "deny", docs[0])
        default = data.get("default", "deny" if self.allow else "allow")
        if default not in ("allow", "deny"):
            raise UserError(f"{docs[0].at('default')}: default must be allow or deny")
        self.default = default == "allow"
        self.description = f"--rbac {path}"

    @staticmethod
    def _rules(data: Mapping[str, Any], key: str, doc: Any) -> list[Rule]:
        raw = data.get(key)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise UserError(f"{doc.at(key)}: {key} must be a list of rules")
        rules = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise UserError(f"{doc.at(key, i)}: {key}[{i}] must be a mapping")
            values: dict[str, tuple[str, ...]] = {}
            for field_name, value in item.items():
                if field_name not in FIELDS:
                    raise UserError(f"{doc.at(key, i, field_name)}: unknown field "
                                    f"{field_name!r} (expected {', '.join(FIELDS)})")
                items = value if isinstance(value, list) else [value]
                if not items or not all(isinstance(v, (str, int)) for v in items):
                    raise UserError(f"{doc.at(key, i, field_name)}: {field_name} must be "
                                    "text or a list of text")
                values[field_name] = tuple(str(v) for v in items)
            rules.append(Rule(f"{key}[{i}]", values))
        return rules

    def target(self, enriched: Any) -> Target:
        return offline_target(enriched)

    def decide(self, subscriber: Any, target: Target) -> tuple[bool, str]:
        for rule in self.deny:
            if rule.matches(subscriber, target):
                return False, f"denied by rule {rule.describe()} in {self.description}"
        for rule in self.allow:
            if rule.matches(subscriber, target):
                return True, f"allowed by rule {rule.describe()} in {self.description}"
        verdict = "allow" if self.default else "deny"
        return self.default, f"no rule matched: default {verdict} in {self.description}"


class Live:
    """The filter's ``AccessReviewer`` (SubjectAccessReview), no cache."""

    def __init__(self, kube: Any, groups_configmap: str = "kubeevent-user-groups",
                 namespace: str = "cpaas-system") -> None:
        from subscription_filter.rbac import AccessReviewer, GroupDirectory

        def read() -> dict[str, str] | None:
            # The administrator's group directory, as the filter reads it (the reviews
            # carry each subscriber's groups); unreadable: reviews without groups.
            try:
                found = kube.get("v1", "ConfigMap", groups_configmap, namespace)
            except bridge.filter_errors.FunctionError:
                return None
            return None if found is None else dict(found.get("data") or {})

        self.reviewer = AccessReviewer(kube, 0.0, groups=GroupDirectory(read, ttl=0.0))
        self.description = "SubjectAccessReview"

    def target(self, enriched: Any) -> Target:
        try:
            found = self.reviewer.target(enriched)
        except bridge.filter_errors.FunctionError as exc:
            raise UserError(f"--rbac live: {exc}") from None
        return Target(found.group, found.version, found.resource, enriched.kind,
                      found.namespace, found.name)

    def decide(self, subscriber: Any, target: Target) -> tuple[bool, str]:
        from subscription_filter.rbac import Target as FilterTarget

        asked = FilterTarget(target.group, target.version, target.resource, target.namespace,
                             target.name)
        try:
            allowed, reason = self.reviewer.allowed(subscriber, asked)
        except bridge.filter_errors.FunctionError as exc:
            raise UserError(f"--rbac live: {exc}") from None
        verdict = "allowed" if allowed else "denied"
        return allowed, f"{verdict} by SubjectAccessReview" + (f": {reason}" if reason else "")


def policy(option: str, kube: Any | None) -> Policy:
    value = option.strip()
    if value == "allow":
        return Fixed(True)
    if value == "deny":
        return Fixed(False)
    if value == "live":
        if kube is None:
            raise UserError("--rbac live needs --kubeconfig")
        return Live(kube)
    return Rules(value)
