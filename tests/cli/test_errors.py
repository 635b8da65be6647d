"""User mistakes: exit 2, one line on stderr that names the problem, never a stack trace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.conftest import Case
from tests.cli.support import SCRIPT, SEED_ADMIN, TEMPLATES, run, write_yaml


def test_no_command_and_unknown_option() -> None:
    run().assert_user_error(
        "a command is needed: lint, simulate, history, explain, test-send, subscribe or "
        "invoke")
    run("lint", "--frobnicate", SEED_ADMIN).assert_user_error(
        "unrecognized arguments: --frobnicate")
    run("simulate", "--event", "x.yaml").assert_user_error(
        "the following arguments are required: --subscriptions")


def test_installed() -> None:
    """The setup (requirements.txt: -e ./cli) puts the console script next to python."""
    assert SCRIPT.exists(), "kubeevent is not installed: pip install -e cli"


def test_version_and_help_exit_zero() -> None:
    version = run("--version")
    assert (version.returncode, version.stdout.strip()) == (0, "kubeevent 0.1.0")
    helped = run("simulate", "--help")
    assert helped.returncode == 0 and "--rbac allow|deny|live|FILE" in helped.stdout


def test_missing_files(tmp_path: Path, pending: Case) -> None:
    missing = tmp_path / "nope.yaml"
    run("lint", SEED_ADMIN, missing).assert_user_error(f"{missing}: no such file or directory")
    run("simulate", "--event", missing, "--subscriptions", pending.subscriptions) \
        .assert_user_error(f"{missing}: no such file or directory")
    run("simulate", "--event", pending.event, "--subscriptions", missing).assert_user_error(
        f"{missing}: no such file or directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    run("lint", empty).assert_user_error("no .yaml, .yml or .json files in this directory")


def test_bad_inputs_of_simulate(tmp_path: Path, pending: Case) -> None:
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("kind: Event\ninvolvedObject: {name: x\n", encoding="utf-8")
    run("simulate", "--event", bad_yaml, "--subscriptions", pending.subscriptions) \
        .assert_user_error(f"{bad_yaml}:3:1: invalid YAML: ")
    not_event = write_yaml(tmp_path / "pod.yaml", {"apiVersion": "v1", "kind": "Pod"})
    run("simulate", "--event", not_event, "--subscriptions", pending.subscriptions) \
        .assert_user_error("--event must be a Kubernetes Event or a CloudEvent, found 'Pod'")
    no_reason = write_yaml(tmp_path / "noreason.yaml", {
        "apiVersion": "v1", "kind": "Event",
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "p"}})
    run("simulate", "--event", no_reason, "--subscriptions", pending.subscriptions) \
        .assert_user_error("not an Event: reason is missing")
    unknown = write_yaml(pending.subscriptions / "deploy.yaml",
                         {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "web"}})
    run("simulate", "--event", pending.event, "--subscriptions", pending.subscriptions) \
        .assert_user_error(f"{unknown}:1:1: Deployment/web: unknown kind 'Deployment'")


def test_bad_options_of_simulate(tmp_path: Path, pending: Case) -> None:
    base = ("simulate", "--event", pending.event, "--object", pending.object,
            "--subscriptions", pending.subscriptions)
    run(*base, "--rbac", "live").assert_user_error("--rbac live needs --kubeconfig")
    rules = write_yaml(tmp_path / "rbac.yaml", {"allow": [{"user": "admin", "verb": "get"}]})
    run(*base, "--rbac", rules).assert_user_error(f"{rules}:3:",
                                                  "unknown field 'verb'")
    run(*base, "--kubeconfig", tmp_path / "none").assert_user_error("--kubeconfig")
    run(*base, "--config", SEED_ADMIN).assert_user_error(
        "expected one katanomi-config ConfigMap or its data patch, found "
        "ClusterSubscription/admin-artifactpromotionrun-subscription")
    no_subs = tmp_path / "templates-only"
    no_subs.mkdir()
    (no_subs / "t.yaml").write_text(TEMPLATES.read_text(encoding="utf-8"), encoding="utf-8")
    run("simulate", "--event", pending.event, "--subscriptions", no_subs) \
        .assert_user_error("no ClusterSubscription found")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00kind", b"a: [1,\n"])
def test_unreadable_event_files(tmp_path: Path, pending: Case, content: bytes) -> None:
    path = tmp_path / "unreadable.yaml"
    path.write_bytes(content)
    line = run("simulate", "--event", path, "--subscriptions", pending.subscriptions) \
        .assert_user_error(str(path))
    assert "not UTF-8 text" in line or "invalid YAML" in line


def test_lint_option_mistakes(pending: Case) -> None:
    run("lint", "--object", pending.object, SEED_ADMIN).assert_user_error(
        "--object needs --event")
    run("lint", "-", "-", stdin="").assert_user_error("'-' (standard input) can be given once")


def test_visible_writes_out_what_a_terminal_would_act_on() -> None:
    from kubeevent_cli.report import print_json, visible

    assert visible("ok\tline\n") == "ok\tline\n"
    assert visible("a\x1b[2Kb\rc\x07\x7f\x9b") == "a\\x1b[2Kb\\x0dc\\x07\\x7f\\x9b"
    assert visible("审批\u202egnp.exe\u200b") == "审批\\u202egnp.exe\\u200b"
    import io

    out = io.StringIO()
    print_json({"reason": "a\x1b]8;;x\x07\u202e\x85"}, out)
    assert out.getvalue() == '{\n  "reason": "a\\u001b]8;;x\\u0007\\u202e\\u0085"\n}\n'


def test_the_cluster_commands_find_their_kubeconfig_as_kubectl_does(tmp_path: Path) -> None:
    """``--kubeconfig`` once was mandatory and ``$KUBECONFIG`` and ``~/.kube/config``
    ignored: now the first file of ``$KUBECONFIG``, else ``~/.kube/config``."""
    home = tmp_path / "home"
    home.mkdir()
    nowhere = {"HOME": str(home), "KUBECONFIG": ""}
    run("history", "--user", "bob", env=nowhere).assert_user_error(
        "no kubeconfig: give --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config")
    missing = tmp_path / "gone"
    run("history", "--user", "bob",
        env={**nowhere, "KUBECONFIG": f"{missing}{os.pathsep}{tmp_path / 'other'}"}) \
        .assert_user_error(f"KUBECONFIG {missing}: no such file")
    (home / ".kube").mkdir()
    (home / ".kube" / "config").write_text("not: [a kubeconfig", encoding="utf-8")
    run("explain", "devops/run-1", env=nowhere).assert_user_error(
        f"~/.kube/config {home / '.kube' / 'config'}: unusable")


def test_a_click_on_the_card_shows_in_the_follow_up() -> None:
    from kubeevent_cli.history import follow_up

    card = {"state": "Open", "clicks": [
        {"at": "2026-12-07T14:02:00Z", "user": "erin.wx", "key": "approve",
         "outcome": "未执行 Not done: you are not an approver of this run"},
        {"at": "2026-12-07T14:03:00Z", "user": "bob.wx", "key": "approve",
         "outcome": "已批准 Approved"}]}
    assert follow_up(card) == ("waiting; clicked approve at 2026-12-07T14:03:00Z: "
                               "已批准 Approved (2 clicks)")
