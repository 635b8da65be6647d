"""README: ``make dev DEV_ARGS="--kube cluster"`` runs the chain on a real kube-apiserver
through Knative Eventing's own broker, and prints who received what."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from dev.cluster import netns
from dev.stack.manifests import ROOT
from tests.cluster.conftest import require_knative
from tests.devstack.test_devstack import environment, who_received_what


def test_make_dev_on_the_cluster_runs_through_knatives_broker(tmp_path: Path) -> None:
    require_knative()
    env = environment()
    env.pop(netns.MARKER, None)  # its own namespaces, as from a shell
    proc = subprocess.Popen([sys.executable, "-m", "dev.stack", "--kube", "cluster", "--once",
                             "--workdir", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        output, errors = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, output[-4000:] + errors[-4000:]
    assert "Knative's broker http://127.0.0.1:8081/cpaas-system/cloudevents-katanomi-dev" \
        in output, output[-4000:]
    assert "dev broker instead" not in output and "dev broker      " not in output
    assert ("Trigger subscription-filter: -> "
            "http://subscription-filter.kubeevent-enricher.svc.cluster.local") in output
    assert f"nsenter -t {proc.pid} -n -m" in output
    assert who_received_what(output) == {
        "admin": ["approvalpending"],
        "bob": ["approvalpending"],
        "alice": ["approvaldenied", "running", "failed"],
        "carol": [],
    }
