"""``python -m dev.cluster`` (``make cluster``): a real control plane to use by hand.

Builds ``.cluster/bin`` if needed, starts etcd and kube-apiserver on 127.0.0.1 with RBAC,
installs every CRD (ours, the ArtifactPromotionRun stand-in, Knative's) and the project
namespaces, prints the API URL and a kubeconfig for admin and for each user, and runs
until Ctrl-C. ``--overlay knative`` also applies an overlay. For the whole chain on it
(functions, Knative's adapter, dev broker, WeCom sandbox) use ``make dev`` with
``--kube cluster``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .controlplane import ROOT, ClusterError, ControlPlane, ensure_built
from .install import apply_overlay, install_crds, project_namespaces


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cluster" / "run",
                        help="certificates, kubeconfigs, etcd data and logs "
                             "(default .cluster/run; wiped at start)")
    parser.add_argument("--overlay", help="also kubectl apply -k manifests/overlays/<name>")
    args = parser.parse_args(argv)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        ensure_built()
        shutil.rmtree(args.workdir, ignore_errors=True)
        plane = ControlPlane(args.workdir)
        plane.start()
    except ClusterError as exc:
        print(f"could not start: {exc}", flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        install_crds(plane)
        project_namespaces(plane)
        if args.overlay:
            apply_overlay(plane, args.overlay)
        print(f"Kubernetes API: {plane.url}", flush=True)
        print(f"export KUBECONFIG={plane.kubeconfig()}", flush=True)
        for line in plane.describe():
            print("  " + line, flush=True)
        print(f"kubectl: {plane.bin / 'kubectl'}   Ctrl-C stops everything.", flush=True)
        idle = threading.Event()
        while not idle.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
    except ClusterError as exc:
        print(f"failed: {exc}", flush=True)
        return 1
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
