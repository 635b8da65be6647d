"""``kubeevent subscribe``: a person's ClusterSubscription from flags, clean under lint,
matching what the source document's subscription matches, safe to paste into a shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import make_case
from tests.cli.support import (
    EXAMPLES,
    PLATFORM_URL,
    SEED_CONFIG_PATCH,
    TEMPLATES,
    run,
)

ALICE_DEVSTACK = EXAMPLES / "devstack" / "clustersubscriptions.yaml"


def subscribe(*flags: str) -> dict:
    done = run("subscribe", *flags)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_a_user_with_both_roles_gets_the_source_documents_subscription():
    written = subscribe("--user", "alice", "--namespace", "devops", "--channel",
                        "corpwechat,email", "--mail", "alice@example.com", "--id",
                        "6384e2b2184bcbf58eccf10ca7a6563c")
    (example,) = [d for d in yaml.safe_load_all(ALICE_DEVSTACK.read_text(encoding="utf-8"))
                  if d["metadata"]["name"] == "alice-artifactpromotionrun-subscription"]
    assert written == example


def test_what_it_writes_passes_lint_and_tells_an_approver_only_what_is_theirs(tmp_path):
    done = run("subscribe", "--user", "bob", "--namespace", "devops", "--role", "approver")
    assert done.returncode == 0, done.stderr
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "bob.yaml").write_text(done.stdout, encoding="utf-8")
    linted = run("lint", "--strict", tmp_path / "subs" / "bob.yaml")
    assert linted.returncode == 0 and linted.stdout.startswith("0 errors, 0 warnings"), \
        linted.stdout
    written = yaml.safe_load(done.stdout)
    assert [e["type"].split(".")[-2] for e in written["spec"]["subscriptions"][0]["events"]] \
        == ["approvalpending"]

    def verdict(reason: str) -> str:
        case = make_case(tmp_path / reason, reason)  # requester alice; admin, bob approve
        shown = run("simulate", "--event", case.event, "--object", case.object,
                    "--subscriptions", tmp_path / "subs", "--templates", TEMPLATES,
                    "--config", SEED_CONFIG_PATCH, "--platform-url", PLATFORM_URL)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.splitlines()[-1]

    assert verdict("ApprovalPending") == "1 of 1 subscription matched; notified: bob"
    assert verdict("Failed") == "0 of 1 subscription matched; nobody is notified"


def test_namespaces_each_get_their_entry_written_out():
    written = subscribe("--user", "carol", "--namespace", "devops-1", "--namespace",
                        "devops-2,devops-1", "--role", "requester")
    entries = written["spec"]["subscriptions"]
    assert [e["object"]["namespace"] for e in entries] == ["devops-1", "devops-2"]
    assert entries[0]["events"] == entries[1]["events"]
    assert [e["type"].split(".")[-2] for e in entries[0]["events"]] \
        == ["approvaldenied", "running", "failed"]


def test_the_heredoc_it_prints_leaves_the_binding_to_the_filter():
    """The seed's unquoted heredoc let bash run ``$(subscriber.name)``; the printed command
    quotes its delimiter, so bash passes the document through untouched."""
    done = run("subscribe", "--user", "alice", "--namespace", "devops", "--heredoc",
               "--quiet-hours", "22:00-08:00 Asia/Shanghai", "--approval-reminders", "30m,2h")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("kubectl apply -f - <<'EOF'\n")
    shell = subprocess.run(["bash", "-c", "kubectl() { cat; }\n" + done.stdout],
                           capture_output=True, text=True, timeout=30, check=True)
    assert shell.stderr == ""
    applied = yaml.safe_load(shell.stdout)
    cels = [e["filter"]["cel"] for e in applied["spec"]["subscriptions"][0]["events"]]
    assert all('"$(subscriber.name)"' in cel for cel in cels), cels
    assert applied["metadata"]["annotations"]["kubeevent.io/quiet-hours"] \
        == "22:00-08:00 Asia/Shanghai"
    assert applied["metadata"]["annotations"]["kubeevent.io/approval-reminders"] == "30m,2h"


@pytest.mark.parametrize(("flags", "phrase"), [
    (["--user", 'al"ice', "--namespace", "devops"], "--user 'al\"ice'"),
    (["--user", "$(id)", "--namespace", "devops"], "--user '$(id)'"),
    (["--user", "alice", "--namespace", "Dev_Ops"], "--namespace 'Dev_Ops'"),
    (["--user", "alice", "--namespace", "devops", "--role", "watcher"], "--role watcher"),
    (["--user", "alice", "--namespace", "devops", "--channel", "sms"], "--channel sms"),
    (["--user", "alice", "--namespace", "devops", "--mail", "a b@x"], "--mail"),
    (["--user", "alice", "--namespace", "devops", "--quiet-hours", "$(reboot)"],
     "quiet hours '$(reboot)' are not HH:MM-HH:MM"),
    (["--user", "alice", "--namespace", "devops", "--quiet-hours", "22:00-08:00 Mars/Base"],
     "'Mars/Base' is not a known time zone"),
    (["--user", "alice", "--namespace", "devops", "--approval-reminders", "soon"],
     "kubeevent.io/approval-reminders 'soon'"),
    (["--user", "alice"], "--namespace"),
])
def test_what_cannot_be_written_safely_is_refused_in_one_line(flags, phrase):
    run("subscribe", *flags).assert_user_error(phrase)


def test_the_user_name_makes_a_valid_object_name(tmp_path: Path):
    written = subscribe("--user", "Zhang.San@corp", "--namespace", "devops")
    assert written["metadata"]["name"] == "zhang.san-corp-artifactpromotionrun-subscription"
    assert written["metadata"]["annotations"]["katanomi.dev/owned.username"] \
        == written["spec"]["subscriber"]["name"] == "Zhang.San@corp"
