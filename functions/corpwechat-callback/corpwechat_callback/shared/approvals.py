"""An object's approval, read from the object (pure: tested with plain data).

Katanomi's public approval types are the model: the approval's spec is
``ApprovalSpec{users: [Subject], policy: Any|All|InOrder, timeout}`` and each decision a
``UserApproval{Subject, operator?, input{approved, description}}``. Where a kind keeps them
is configuration (``ApprovalPaths``, ``APPROVAL_PATHS``): ArtifactPromotionRun's spec is
where the source document's CEL reads it (``status.artifactPromotionSpec.approvalSpec``);
where Katanomi keeps its decisions is not public, so the default
(``status.approval.users``, the shape of Katanomi's ``Approval`` runtime object) can be
pointed at the real field.

What an approval says:

=========  ==========================================================================
policy     decided when
=========  ==========================================================================
Any        one approver approved (approved) or one denied (denied)
All        every approver approved (approved), or one denied (denied)
InOrder    every approver approved, in their order (approved), or one denied (denied);
           only the first who has not decided may decide now
=========  ==========================================================================

``waiting_on`` is who is to be reminded while it is pending: under ``Any`` and ``All``
everyone who has not decided, under ``InOrder`` only the one whose turn it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLICIES = ("Any", "All", "InOrder")
PENDING, APPROVED, DENIED = "pending", "approved", "denied"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ApprovalError(ValueError):
    """The configuration of approval paths cannot be used (its value is named)."""


def parse_duration(text: str) -> float | None:
    """A Go ``time.Duration`` string (``24h``, ``1h30m``, ``90s``) in seconds; ``None``
    when it is not one (``0`` and ``""`` mean no timeout)."""
    text = text.strip()
    if text in ("", "0", "0s"):
        return None
    if _DURATION.sub("", text) != "":
        return None
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
    return seconds or None


@dataclass(frozen=True)
class ApprovalPaths:
    """Where one kind keeps its approval: dotted paths from the object's root."""

    spec: str
    decisions: str


DEFAULT_PATHS = {
    "ArtifactPromotionRun": ApprovalPaths("status.artifactPromotionSpec.approvalSpec",
                                          "status.approval.users"),
}


def paths_from(value: str, defaults: Mapping[str, ApprovalPaths] = DEFAULT_PATHS
               ) -> dict[str, ApprovalPaths]:
    """``APPROVAL_PATHS``: ``Kind=spec.path:decisions.path`` entries separated by commas,
    over the defaults (an entry replaces its kind's)."""
    paths = dict(defaults)
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        kind, _, where = entry.partition("=")
        spec, _, decisions = where.partition(":")
        if not kind.strip() or not _dotted(spec) or not _dotted(decisions):
            raise ApprovalError(f"APPROVAL_PATHS entry {entry!r} is not "
                                "Kind=spec.path:decisions.path")
        paths[kind.strip()] = ApprovalPaths(spec.strip(), decisions.strip())
    return paths


def _dotted(path: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", path.strip()))


def _at(obj: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _name(subject: Any) -> str:
    if not isinstance(subject, Mapping):
        return ""
    name = subject.get("name")
    return name.strip() if isinstance(name, str) else ""


@dataclass(frozen=True)
class Decision:
    user: str
    approved: bool
    description: str = ""
    operator: str = ""  # who decided on the user's behalf, when someone else did


@dataclass(frozen=True)
class Approval:
    approvers: tuple[str, ...]
    policy: str = "Any"
    timeout: float | None = None  # seconds from the approval's start
    decisions: tuple[Decision, ...] = ()

    def decision_of(self, user: str) -> Decision | None:
        return next((d for d in self.decisions if d.user == user), None)

    @property
    def state(self) -> str:
        mine = [d for d in (self.decision_of(u) for u in self.approvers) if d is not None]
        if any(not d.approved for d in mine):
            return DENIED
        approved = {d.user for d in mine}
        if self.policy == "Any":
            return APPROVED if approved else PENDING
        return APPROVED if approved >= set(self.approvers) else PENDING

    @property
    def decided_by(self) -> Decision | None:
        """The decision that decided it (the denial, or the approval that completed it)."""
        state = self.state
        if state == PENDING:
            return None
        wanted = state == APPROVED
        decided = [d for d in self.decisions if d.user in self.approvers
                   and d.approved == wanted]
        return decided[0] if state == DENIED or self.policy == "Any" else decided[-1]

    @property
    def waiting_on(self) -> tuple[str, ...]:
        """Who is to decide now: nobody once it is decided."""
        if self.state != PENDING:
            return ()
        undecided = tuple(u for u in self.approvers if self.decision_of(u) is None)
        return undecided[:1] if self.policy == "InOrder" else undecided


def approval_of(obj: Mapping[str, Any], paths: ApprovalPaths) -> Approval | None:
    """The object's approval; ``None`` when it has none (no approvers at the spec path)."""
    spec = _at(obj, paths.spec)
    if not isinstance(spec, Mapping):
        return None
    approvers = tuple(dict.fromkeys(n for n in (_name(u) for u in spec.get("users") or [])
                                    if n))
    if not approvers:
        return None
    policy = spec.get("policy") if spec.get("policy") in POLICIES else "Any"
    timeout = spec.get("timeout")
    decisions: list[Decision] = []
    for raw in _at(obj, paths.decisions) or []:
        given = raw.get("input") if isinstance(raw, Mapping) else None
        user = _name(raw)
        # An input is a decision; Katanomi writes ``approved`` with omitempty, so a denial
        # is an input without it.
        if not user or not isinstance(given, Mapping) or any(d.user == user for d in decisions):
            continue  # no decision yet (or a second one for the same user: the first counts)
        description = given.get("description")
        decisions.append(Decision(user, given.get("approved") is True,
                                  description if isinstance(description, str) else "",
                                  _name(raw.get("operator"))))
    return Approval(approvers, str(policy),
                    parse_duration(timeout) if isinstance(timeout, str) else None,
                    tuple(decisions))
