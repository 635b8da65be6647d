"""The follow-up configuration (shared/followups.py), with plain data."""

from __future__ import annotations

import pytest

from shared.config import ConfigError
from shared.followups import FollowConfig


def test_defaults_and_what_the_environment_changes() -> None:
    assert FollowConfig.from_env({}) == FollowConfig()
    config = FollowConfig.from_env({
        "APPROVAL_REQUEST_REASONS": "ApprovalPending, WaitingForApproval",
        "APPROVAL_REMIND_AFTER_SECONDS": "0", "NOTIFY_TIME_ZONE": "Asia/Shanghai",
        "APPROVAL_PATHS": "Deployment=spec.approval:status.decisions"})
    assert config.reasons == frozenset({"approvalpending", "waitingforapproval"})
    assert config.remind_after == 0 and config.zone == "Asia/Shanghai"
    assert config.follows("ArtifactPromotionRun", "ApprovalPending")
    assert config.follows("Deployment", "waitingForApproval")
    assert not config.follows("Deployment", "Running")
    assert not config.follows("Pod", "ApprovalPending")


@pytest.mark.parametrize("environ, says", [
    ({"NOTIFY_TIME_ZONE": "Mars/Olympus"}, "NOTIFY_TIME_ZONE 'Mars/Olympus'"),
    ({"APPROVAL_PATHS": "Run=spec"}, "APPROVAL_PATHS entry 'Run=spec'"),
    ({"APPROVAL_REMIND_EVERY_SECONDS": "-1"}, "APPROVAL_REMIND_EVERY_SECONDS"),
])
def test_a_bad_value_fails_start_naming_it(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        FollowConfig.from_env(environ)
    assert says in str(raised.value)


@pytest.mark.parametrize("written, expected", [
    ("", (3600.0, 14400.0)),
    ("off", (0.0, 0.0)),
    ("OFF", (0.0, 0.0)),
    ("30m,2h", (1800.0, 7200.0)),
    ("45m", (2700.0, 0.0)),  # one reminder
    ("1h, 0", (3600.0, 0.0)),
    ("soon", (3600.0, 14400.0)),  # not understood: the defaults
    ("1h,often", (3600.0, 14400.0)),
])
def test_a_subscriptions_reminders(written: str, expected: tuple[float, float]) -> None:
    assert FollowConfig().reminders(written) == expected
