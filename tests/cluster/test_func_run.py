"""Knative's own func CLI (v0.49.2, the func of Knative 1.22, built from its Go module into
.cluster/bin): `func run --builder host` builds each function from its folder as the
Python project `function` and serves `new()` with func-python. It installs offline, from
the wheels `make test` downloaded. A signed CloudEvent gets the answer functions-framework
gives; an unsigned one the same one-line 403. Each function logs in to a real
kube-apiserver as its own ServiceAccount, with the RBAC of the manifests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from dev.cluster.chain import ClusterChain
from dev.cluster.chain import controller_event as event_about
from dev.cluster.controlplane import ControlPlane
from dev.support import factory
from dev.support.procs import FunctionProcess, free_port
from dev.support.sink import RecordingSink
from dev.support.wire import from_http

ROOT = Path(__file__).resolve().parents[2]
FUNC = ROOT / ".cluster" / "bin" / "func"
WHEELS = ROOT / ".venv-func" / "wheels"
NAMESPACE = "kubeevent-enricher"
RUNNING = re.compile(r"Function running on (127\.0\.0\.1:\d+)")

if not FUNC.exists():
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"{FUNC} is missing: dev/cluster/build.sh builds it")
    pytest.skip(f"{FUNC} not built (dev/cluster/build.sh)", allow_module_level=True)


class FuncRun:
    """`func run --builder host` in a copy of a function's folder (func writes .func/ and
    may touch func.yaml there)."""

    def __init__(self, name: str, tmp: Path, env: dict[str, str]) -> None:
        self.dir = tmp / name
        shutil.copytree(ROOT / "functions" / name, self.dir,
                        ignore=shutil.ignore_patterns("__pycache__", ".func"))
        self.log = tmp / f"{name}.log"
        # The function's configuration as `func run --env` (func.yaml's run.envs would
        # win over the environment); pip offline, from the local wheels.
        self.settings = {**factory.SIGNING_ENV, **env}
        self.env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELS)}
        self.address = f"127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> FuncRun:
        settings = [f"--env={k}={v}" for k, v in self.settings.items()]
        self.proc = subprocess.Popen(
            [str(FUNC), "run", "--builder", "host", "--registry", "registry.example.com/x",
             f"--address={self.address}", *settings],
            cwd=self.dir, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            found = RUNNING.search(self.output())
            if found:
                self.url = f"http://{found.group(1)}"
                if requests.get(self.url + "/health/readiness", timeout=2).ok:
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.__exit__()
        raise AssertionError(f"func run did not serve:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture(scope="module")
def cluster(plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> ClusterChain:
    """The overlay, its ServiceAccounts and RBAC, the people and their access installed on
    the real control plane (the functions themselves run under func or
    functions-framework here, not as the chain)."""
    chain = ClusterChain(plane, tmp_path_factory.mktemp("chain"))
    chain.install()
    return chain


def login(cluster: ClusterChain, name: str) -> dict[str, str]:
    """``name``'s environment: logged in as its own ServiceAccount."""
    path = cluster.plane.service_account_kubeconfig(NAMESPACE, name)
    return {"KUBECONFIG": str(path)}


def test_the_enricher_under_func_run_answers_as_under_functions_framework(
        cluster: ClusterChain, tmp_path: Path) -> None:
    run = cluster.new_run(factory.promotion_run("func-run", "devops"))
    event = cluster.create(event_about(run, "ApprovalPending"))
    with RecordingSink() as broker:
        env = {**login(cluster, "kubeevent-enricher-sink"), "BROKER_INGRESS_URL": broker.url}
        answers = {}
        with FuncRun("kubeevent-enricher-sink", tmp_path, env) as func:
            assert str(WHEELS) in func.output() and "hypercorn" in func.output(), \
                "installed from the local wheels, served by func-python (hypercorn)"
            answers["func"] = factory.post(func.url, factory.apiserver_event(event))
            unsigned_answer = factory.post(func.url, factory.enriched_event(signed=False))
            forged = factory.post(func.url, factory.apiserver_event(
                {**event, "metadata": {**event["metadata"], "name": "never-created"}}))
        by_func = broker.events()
        broker.clear()
        with FunctionProcess("kubeevent-enricher-sink", env=env) as ff:
            answers["ff"] = factory.post(ff.url, factory.apiserver_event(event))
        by_ff = broker.events()
    assert {k: (a.status_code, a.content) for k, a in answers.items()} == {
        "func": (202, b""), "ff": (202, b"")}
    assert [e["id"] for e in by_func] == [e["id"] for e in by_ff], "the same enriched event"
    assert by_func[0].data == by_ff[0].data
    assert by_func[0].data["object"]["metadata"]["uid"] == run["metadata"]["uid"]
    assert unsigned_answer.status_code == 400, "not an event the enricher takes"
    assert (forged.status_code, forged.text.strip()) == (
        403, "unconfirmed Event: the API server has no Event devops/never-created; "
        "nothing emitted"), \
        forged.text


def test_the_filter_under_func_run_refuses_unsigned_events_with_one_line(
        cluster: ClusterChain, tmp_path: Path) -> None:
    from dev.support.seed import example

    cluster.apply_yaml(example("seed-clustersubscription-admin.yaml"), user="admin")
    run = cluster.new_run(factory.promotion_run("func-filter", "devops"))
    env = login(cluster, "subscription-filter")
    signed = factory.enriched_event("approvalpending", obj=run)
    with FuncRun("subscription-filter", tmp_path, env) as func:
        unsigned = factory.post(func.url, factory.enriched_event(signed=False))
        by_func = factory.post(func.url, signed)
    ff = FunctionProcess("subscription-filter", env=env).start(wait_ready=True)
    try:
        by_ff = factory.post(ff.url, signed)
    finally:
        ff.stop()
    assert unsigned.status_code == 403
    assert unsigned.text.strip() == ("unsigned event: only kubeevent-enricher-sink may send "
                                     "here (extension kubeeventsignature missing)")
    assert by_func.status_code == by_ff.status_code == 200, (by_func.text, by_ff.text)
    assert (by_func.status_code, by_func.headers["ce-type"]) == \
        (by_ff.status_code, by_ff.headers["ce-type"]) == \
        (200, "dev.katanomi.cloudevents.notification.requested.v1alpha1")
    assert by_func.headers["ce-id"] == by_ff.headers["ce-id"]
    assert by_func.content == by_ff.content, "the same recipients, admin and bob"
    recipients = from_http(dict(by_func.headers), by_func.content).data["recipients"]
    assert sorted(r["subscriber"]["name"] for r in recipients) == ["admin"]


def test_the_notifier_under_func_run_sends_as_under_functions_framework(
        cluster: ClusterChain, tmp_path: Path) -> None:
    from dev.fakes.wecom import WeComSandbox

    with WeComSandbox(corp_id="ww-func", corp_secret="s" * 32, agent_id=1000002,
                      users=["bob"]) as wecom:
        env = {**login(cluster, "corpwechat-notifier"),
               "CORPWECHAT_API_URL": wecom.api_url, "CORPWECHAT_CORP_ID": "ww-func",
               "CORPWECHAT_CORP_SECRET": "s" * 32, "CORPWECHAT_AGENT_ID": "1000002",
               "CORPWECHAT_USERID_FROM_USERNAME": "true"}

        def request(name: str) -> object:
            return factory.notification_request(
                factory.enriched_event("approvalpending", obj=factory.promotion_run(name)),
                recipients=[factory.recipient("bob")])

        with FuncRun("corpwechat-notifier", tmp_path, env) as func:
            unsigned = factory.post(func.url, factory.notification_request(signed=False))
            sent = request("run-func")
            by_func = factory.post(func.url, sent)  # type: ignore[arg-type]
            again = factory.post(func.url, sent)  # type: ignore[arg-type]
        with FunctionProcess("corpwechat-notifier", env=env) as ff:
            by_ff = factory.post(ff.url, request("run-ff"))  # type: ignore[arg-type]
        assert wecom.wait_idle(10)
        assert unsigned.status_code == 403
        assert unsigned.text.startswith("unsigned event: only subscription-filter may send")
        assert (by_func.status_code, by_func.content) == (by_ff.status_code, by_ff.content) \
            == (202, b"")
        assert again.status_code == 202, again.text
        # One message for each run (the repeat is recorded as sent, in the API server).
        told = sorted((d.userid, "run-func" in (d.content or d.description or ""))
                      for d in wecom.delivered)
        assert told == [("bob", False), ("bob", True)]
        records = json.loads(cluster.plane.kubectl(
            "get", "notificationdeliveries", "-A", "-o", "json").stdout)["items"]
        assert len(records) == 2 and all(
            (r.get("status") or {}).get("phase") == "Sent" for r in records), records


def test_kubeevent_invoke_signs_what_func_invoke_cannot(cluster: ClusterChain,
                                                        tmp_path: Path) -> None:
    """A developer's test event to the filter under `func run`: signed with the local key
    it is answered; with --unsigned it gets the one-line 403 that says why."""
    from tests.cli.support import run as kubeevent

    cluster.create(factory.cluster_subscription("bob", name="bob-invoke"), user="bob")
    run = cluster.new_run(factory.promotion_run("func-invoke", approvers=("bob",)))
    event = factory.as_json(factory.enriched_event("approvalpending", obj=run, signed=False))
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    with FuncRun("subscription-filter", tmp_path, login(cluster, "subscription-filter")) as func:
        signed = kubeevent("invoke", func.url, "--event", path, "--json",
                           env=factory.SIGNING_ENV)
        unsigned = kubeevent("invoke", func.url, "--event", path, "--unsigned")
        keyless = kubeevent("invoke", func.url, "--event", path,
                            env={"KUBEEVENT_SIGNING_KEY": ""})
    assert signed.returncode == 0, signed.stderr
    answer = signed.json()
    assert answer["status"] == 200 and answer["signed"] is True
    assert [r["subscriber"]["name"] for r in answer["reply"]["data"]["recipients"]] == ["bob"]
    assert unsigned.returncode == 1
    assert unsigned.stdout.strip() == ("403 unsigned event: only kubeevent-enricher-sink may "
                                       "send here (extension kubeeventsignature missing)")
    assert keyless.returncode == 2 and "KUBEEVENT_SIGNING_KEY is required" in keyless.stderr
