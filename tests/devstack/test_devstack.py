"""README command 1: ``python -m dev.stack`` shows who received which message."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dev.stack.manifests import ROOT

COMMAND = [sys.executable, "-m", "dev.stack", "--kube", "fake", "--wecom", "sandbox"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CORPWECHAT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def who_received_what(output: str, heading: str = "Who received what:") -> dict[str, list[str]]:
    lines = output.split(heading + "\n", 1)[1].splitlines()
    table: dict[str, list[str]] = {}
    for line in lines:
        match = re.match(r"^  (\S+)\s+(.+)$", line)
        if not match:
            break
        reasons = match.group(2).strip()
        table[match.group(1)] = [] if reasons == "(nothing)" else reasons.split(", ")
    return table


def test_once_replays_the_four_scenarios_and_prints_who_received_what(tmp_path: Path) -> None:
    proc = subprocess.Popen([*COMMAND, "--once", "--workdir", str(tmp_path)], cwd=ROOT,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        output, errors = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:  # do not leave the stack's processes behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, output + errors
    assert who_received_what(output) == {
        "admin": ["approvalpending"],
        "bob": ["approvalpending"],
        "alice": ["approvaldenied", "running", "failed"],
        "carol": [],
    }
    # alice, bob and carol subscribe on both channels (the example subscriptions), admin
    # (the seed's) on CorpWeChat only: the mail comes from the dev stack's Mailpit
    assert who_received_what(output, "Who received what by email:") == {
        "admin": [],
        "bob": ["approvalpending"],
        "alice": ["approvaldenied", "running", "failed"],
        "carol": [],
    }
    assert "bob   ← [email] 制品晋级待您审批 / Artifact promotion awaiting your approval: " \
        "devops/my-promotion" in output
    assert re.search(r"mail \(Mailpit\)\s+read at http://127\.0\.0\.1:\d+", output)
    assert "admin ← [template_card] 制品晋级待您审批 / Artifact promotion awaiting your approval" \
        in output
    assert "alice ← [textcard] 制品晋级失败 / Artifact promotion failed" in output
    # ports and logs are shown
    for name in ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
                 "email-notifier"):
        assert re.search(rf"{name}\s+http://127\.0\.0\.1:\d+\s+\(log \S+\)", output), name
    assert f"(log {tmp_path / 'broker.log'})" in output
    assert "artifactpromotionrun.approvalpending.v1alpha1" in (tmp_path / "broker.log").read_text()


def port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_ctrl_c_stops_every_part(tmp_path: Path) -> None:
    proc = subprocess.Popen([*COMMAND, "--no-replay", "--workdir", str(tmp_path)], cwd=ROOT,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        assert "Ctrl-C stops everything" in output, output
        urls = re.findall(r"(http://127\.0\.0\.1:\d+)", output)
        assert len(set(urls)) >= 5, output  # API server, WeCom, broker, three functions
        assert all(port_open(url) for url in set(urls))
        proc.send_signal(signal.SIGINT)
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired as exc:
            tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,cmd", "--forest", "-g",
                                   str(proc.pid)], capture_output=True, text=True, check=False)
            raise AssertionError(f"still running after SIGINT:\n{exc.output}\n{tree.stdout}") \
                from None
    finally:
        if proc.poll() is None:  # do not leave the stack's processes behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, output + rest
    assert "stopped." in rest
    assert not any(port_open(url) for url in set(urls)), "a part kept running"
