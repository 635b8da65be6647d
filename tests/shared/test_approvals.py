"""An object's approval read with plain data: policies, decisions, whose turn, timeouts,
and where a kind keeps them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.approvals import (
    APPROVED,
    DEFAULT_PATHS,
    DENIED,
    PENDING,
    ApprovalError,
    ApprovalPaths,
    approval_of,
    parse_duration,
    paths_from,
)

PATHS = DEFAULT_PATHS["ArtifactPromotionRun"]


def run(policy: str | None = "All", *decisions: dict[str, Any],
        approvers: tuple[str, ...] = ("admin", "bob"), timeout: str | None = "24h"
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"users": [{"kind": "User", "name": n} for n in approvers]}
    if policy is not None:
        spec["policy"] = policy
    if timeout is not None:
        spec["timeout"] = timeout
    return {"status": {"artifactPromotionSpec": {"approvalSpec": spec},
                       "approval": {"users": list(decisions)}}}


def decided(name: str, approved: bool = True, **extra: Any) -> dict[str, Any]:
    given: dict[str, Any] = {"approved": True} if approved else {"description": "no"}
    return {"kind": "User", "name": name, "input": given, **extra}


def test_no_decision_is_pending_and_everyone_is_waited_on() -> None:
    approval = approval_of(run("All"), PATHS)
    assert approval is not None
    assert (approval.state, approval.waiting_on, approval.timeout) == \
        (PENDING, ("admin", "bob"), 86400.0)


@pytest.mark.parametrize(("policy", "decisions", "state", "waiting", "by"), [
    ("Any", [decided("bob")], APPROVED, (), "bob"),
    ("All", [decided("bob")], PENDING, ("admin",), None),
    ("All", [decided("bob"), decided("admin")], APPROVED, (), "admin"),
    ("All", [decided("bob", approved=False)], DENIED, (), "bob"),
    ("InOrder", [], PENDING, ("admin",), None),
    ("InOrder", [decided("admin")], PENDING, ("bob",), None),
    ("InOrder", [decided("admin"), decided("bob")], APPROVED, (), "bob"),
    ("Any", [decided("admin", approved=False)], DENIED, (), "admin"),
    # someone who is not an approver decides nothing
    ("Any", [decided("mallory")], PENDING, ("admin", "bob"), None),
])
def test_each_policy_decides_as_katanomi_does(policy, decisions, state, waiting, by) -> None:
    approval = approval_of(run(policy, *decisions), PATHS)
    assert approval is not None
    assert (approval.state, approval.waiting_on) == (state, waiting)
    assert (approval.decided_by.user if approval.decided_by else None) == by


def test_a_denial_without_approved_written_is_a_denial_and_operator_is_kept() -> None:
    """Katanomi writes ``approved`` with omitempty: ``input: {description: ...}`` denies."""
    approval = approval_of(run("All", decided("bob", approved=False,
                                              operator={"kind": "User", "name": "admin"})),
                           PATHS)
    assert approval is not None and approval.state == DENIED
    decision = approval.decision_of("bob")
    assert decision is not None
    assert (decision.approved, decision.description, decision.operator) == (False, "no", "admin")


def test_no_approvers_is_no_approval_and_odd_values_are_not_believed() -> None:
    assert approval_of({"status": {}}, PATHS) is None
    assert approval_of(run("All", approvers=()), PATHS) is None
    approval = approval_of(run("Sometimes", approvers=("bob", "bob"), timeout="soon"), PATHS)
    assert approval is not None
    assert (approval.policy, approval.approvers, approval.timeout) == ("Any", ("bob",), None)
    first = approval_of(run("All", decided("bob"), decided("bob", approved=False)), PATHS)
    assert first is not None and first.decision_of("bob").approved is True  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400.0), ("1h30m", 5400.0), ("90s", 90.0), ("1.5h", 5400.0), ("0s", None),
    ("", None), ("tomorrow", None), ("5d", None),
])
def test_durations_are_gos(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_where_a_kind_keeps_its_approval_is_configuration() -> None:
    paths = paths_from("ArtifactPromotionRun=status.approvalSpec:status.decisions, "
                       "StageRun=spec.approval:status.approval.users")
    assert paths["ArtifactPromotionRun"] == ApprovalPaths("status.approvalSpec",
                                                          "status.decisions")
    assert paths["StageRun"].decisions == "status.approval.users"
    assert paths_from("") == DEFAULT_PATHS
    for bad in ("ArtifactPromotionRun", "X=a.b", "=a:b", "X=a b:c"):
        with pytest.raises(ApprovalError, match="APPROVAL_PATHS"):
            paths_from(bad)
