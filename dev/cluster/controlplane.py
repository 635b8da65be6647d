"""A real Kubernetes control plane as local processes: etcd and kube-apiserver on 127.0.0.1.

Built from Go modules by ``dev/cluster/build.sh`` into ``.cluster/bin``. The API server
runs with ``--authorization-mode=RBAC``; every user has credentials of their own (the
admin a client certificate in ``system:masters``, the others bearer tokens with their
groups), and ServiceAccounts log in with tokens from the TokenRequest API
(``kubectl create token``), as they would in a cluster. Only the processes started here
are ever stopped, by their PIDs.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
import yaml

from dev.support.procs import end_session, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cluster" / "bin"
BUILD_SCRIPT = ROOT / "dev" / "cluster" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kubectl", "apiserver_receive_adapter")
ADMIN = "admin"


@dataclass(frozen=True)
class User:
    """A person who logs in with a bearer token of their own."""

    name: str
    groups: tuple[str, ...] = ()


# The people of the tests. erin may read runs only through a group binding.
USERS = (
    User("alice", ("dev",)),
    User("bob", ("dev", "qa")),
    User("carol", ("finance",)),
    User("erin", ("release-managers",)),
)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or driven."""


def binaries_missing(bin_dir: Path = BIN) -> list[str]:
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


def build_status() -> tuple[bool, str]:
    """(usable, why not): can this machine run the cluster tests?"""
    if shutil.which("go") is None and binaries_missing():
        return False, "no Go toolchain on PATH to build .cluster/bin"
    if shutil.which("openssl") is None:
        return False, "no openssl on PATH (the control plane's certificates)"
    check = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True,
                           check=False)
    if check.returncode != 0:
        return False, ".cluster/bin is missing or out of date: run dev/cluster/build.sh"
    return True, ""


def ensure_built() -> None:
    """Run dev/cluster/build.sh, which builds only when .cluster/bin is not current."""
    if shutil.which("go") is None and binaries_missing():
        raise ClusterError("no Go toolchain on PATH to build .cluster/bin")
    if subprocess.run(["bash", str(BUILD_SCRIPT)], check=False).returncode != 0:
        raise ClusterError("building .cluster/bin failed (see above)")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


class Process:
    """One child process with its log file, in a session of its own: stopped with
    everything it started, and nothing else."""

    def __init__(self, name: str, argv: Sequence[str], log: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """``sig`` to the process and what it started (its session: a launcher and the
        binary it runs are one pod), SIGKILL to them all after ``timeout``; nothing of
        it outlives this, as nothing of a pod outlives the pod."""
        if self.proc is not None:
            end_session(self.proc, sig, timeout)
        if self._out is not None:
            self._out.close()
            self._out = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class ControlPlane:
    """``start()`` brings etcd and kube-apiserver up; ``stop()`` ends both."""

    def __init__(self, workdir: Path, *, bin_dir: Path = BIN,
                 users: Sequence[User] = USERS, service_range: str = "10.0.0.0/24") -> None:
        self.dir = workdir
        # Knative's data plane needs loopback ClusterIPs (dev/cluster/eventing.py).
        self.service_range = service_range
        self.bin = bin_dir
        self.users = {user.name: user for user in users}
        self.pki = workdir / "pki"
        self.etcd_port = 0
        self.api_port = 0
        self._tokens: dict[str, str] = {}
        self._etcd: Process | None = None
        self._apiserver: Process | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 120.0) -> ControlPlane:
        missing = binaries_missing(self.bin)
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} in {self.bin}: "
                               f"run dev/cluster/build.sh")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._make_pki()
            self._write_tokens()
            self._start_etcd(timeout)
            self.api_port = free_port()
            self._start_apiserver(timeout)
            self._write_kubeconfigs()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for part in (self._apiserver, self._etcd):
            if part is not None:
                part.stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_apiserver(self, timeout: float = 120.0) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd."""
        assert self._apiserver is not None
        self._apiserver.stop()
        self._start_apiserver(timeout)

    def stop_apiserver(self) -> None:
        assert self._apiserver is not None
        self._apiserver.stop()

    def start_apiserver(self, timeout: float = 120.0) -> None:
        self._start_apiserver(timeout)

    @property
    def pids(self) -> dict[str, int | None]:
        return {"etcd": self._etcd.pid if self._etcd else None,
                "kube-apiserver": self._apiserver.pid if self._apiserver else None}

    # ------------------------------------------------------------------ PKI and users

    def _openssl(self, *args: str) -> None:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True,
                                check=False, cwd=self.pki)
        if result.returncode != 0:
            raise ClusterError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")

    def _leaf(self, name: str, subject: str, *extensions: str) -> None:
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                      "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (self.pki / f"{name}.ext").write_text("\n".join(extensions) + "\n")
        self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                      "-CAcreateserial", "-days", "30", "-out", f"{name}.crt",
                      "-extfile", f"{name}.ext")

    def _make_pki(self) -> None:
        if (self.pki / "admin.crt").exists():
            return
        self.pki.mkdir(parents=True, exist_ok=True)
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                      "-subj", "/CN=kubeevent-test-ca", "-keyout", "ca.key", "-out", "ca.crt",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        usage = "keyUsage=critical,digitalSignature,keyEncipherment"
        self._leaf("apiserver", "/CN=kube-apiserver", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                   "extendedKeyUsage=serverAuth", usage)
        self._leaf("admin", f"/O=system:masters/CN={ADMIN}", "extendedKeyUsage=clientAuth", usage)
        self._openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                      "-out", "sa.key")
        self._openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_tokens(self) -> None:
        path = self.dir / "tokens.csv"
        if path.exists():
            for line in path.read_text().splitlines():
                token, name = line.split(",")[:2]
                self._tokens[name] = token
            return
        lines = []
        for user in self.users.values():
            token = secrets.token_hex(16)
            self._tokens[user.name] = token
            groups = ",".join(user.groups)
            lines.append(f'{token},{user.name},uid-{user.name},"{groups}"')
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    # ------------------------------------------------------------------ processes

    def _start_etcd(self, timeout: float) -> None:
        self.etcd_port, peer = free_port(), free_port()
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._etcd = Process("etcd", [
            str(self.bin / "etcd"), "--name=kubeevent-test", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubeevent-test={peer_url}", "--unsafe-no-fsync",
            "--log-level=warn",
        ], self.dir / "etcd.log")
        self._etcd.start()
        self._wait(self._etcd, f"{client}/health", timeout, verify=False, cert=None)

    def _start_apiserver(self, timeout: float) -> None:
        p = self.pki
        (self.dir / "audit-policy.yaml").write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
        self._apiserver = Process("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={self.api_port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}", f"--cert-dir={p}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--token-auth-file={self.dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_range}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            f"--audit-policy-file={self.dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.dir / 'audit.log'}",
            "--profiling=false", "--v=1",
        ], self.dir / "kube-apiserver.log")
        self._apiserver.start()
        self._wait(self._apiserver, f"{self.url}/readyz", timeout,
                   verify=str(p / "ca.crt"), cert=(str(p / "admin.crt"), str(p / "admin.key")))

    @staticmethod
    def _wait(process: Process, url: str, timeout: float, *, verify: Any, cert: Any) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive():
                raise ClusterError(f"{process.name} exited:\n{process.tail()}")
            try:
                if requests.get(url, verify=verify, cert=cert, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise ClusterError(f"{process.name} not ready after {timeout:.0f} s:\n{process.tail()}")

    # ------------------------------------------------------------------ access

    def _kubeconfig_text(self, user: str, credentials: dict[str, str]) -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kubeevent-test",
            "clusters": [{"name": "kubeevent-test", "cluster": {
                "server": self.url,
                "certificate-authority-data": _b64(self.pki / "ca.crt")}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "kubeevent-test",
                          "context": {"cluster": "kubeevent-test", "user": user}}],
        })

    def _write_kubeconfigs(self) -> None:
        self._write(ADMIN, {"client-certificate-data": _b64(self.pki / "admin.crt"),
                            "client-key-data": _b64(self.pki / "admin.key")})
        for name, token in self._tokens.items():
            self._write(name, {"token": token})

    def _write(self, user: str, credentials: dict[str, str]) -> Path:
        path = self.kubeconfig_path(user)
        path.write_text(self._kubeconfig_text(user, credentials))
        path.chmod(0o600)
        return path

    def kubeconfig_path(self, user: str = ADMIN) -> Path:
        return self.dir / f"{user.replace(':', '_')}.kubeconfig"

    def kubeconfig(self, user: str = ADMIN) -> Path:
        """The kubeconfig of a person (``admin`` or one of ``USERS``)."""
        path = self.kubeconfig_path(user)
        if not path.exists():
            raise KeyError(f"no user {user!r} in this control plane")
        return path

    def service_account_kubeconfig(self, namespace: str, name: str,
                                   duration: str = "24h") -> Path:
        """A kubeconfig that logs in as the ServiceAccount (the TokenRequest API)."""
        token = self.kubectl("create", "token", name, "-n", namespace,
                             f"--duration={duration}").stdout.strip()
        return self._write(f"system:serviceaccount:{namespace}:{name}", {"token": token})

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    def kubectl(self, *args: str, user: str = ADMIN, input: str | None = None,
                check: bool = True, env: Mapping[str, str] | None = None,
                timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl as ``user``; a failure raises with kubectl's own words."""
        full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.dir),
                    "KUBECONFIG": str(self.kubeconfig(user))}
        full_env.update(env or {})
        result = subprocess.run([str(self.bin / "kubectl"), *args], input=input,
                                capture_output=True, text=True, env=full_env, check=False,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} as {user} failed "
                               f"({result.returncode}): {result.stderr.strip()}")
        return result

    def crds_established(self, *names: str, timeout: float = 60.0) -> None:
        """Wait until the named CRDs (all when none is named) are Established.
        ``kubectl wait`` gives up at once on a CRD the API server has not yet given any
        condition, so this polls instead."""
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        while time.monotonic() < deadline:
            got = self.kubectl("get", "customresourcedefinitions", *names, "-o", "json",
                               check=False)
            if got.returncode == 0:
                listed = json.loads(got.stdout)
                items = listed["items"] if listed.get("kind") == "List" else [listed]
                waiting = [str(i["metadata"]["name"]) for i in items if not any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (i.get("status") or {}).get("conditions") or [])]
                if not waiting:
                    return
            time.sleep(0.1)
        raise ClusterError(f"CRDs not Established after {timeout:.0f} s: "
                           f"{', '.join(waiting or names)}")

    def shell(self, script: str, *, user: str = ADMIN, cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell snippet (e.g. the source document's own commands) with the built
        kubectl first on PATH, logged in as ``user``."""
        full_env = {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                    "HOME": str(self.dir), "KUBECONFIG": str(self.kubeconfig(user))}
        full_env.update(env or {})
        return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                              text=True, env=full_env, cwd=cwd, check=False, timeout=120)

    def describe(self) -> list[str]:
        etcd = f"http://127.0.0.1:{self.etcd_port}"
        lines = [f"kube-apiserver  {self.url}  (log {self.dir / 'kube-apiserver.log'})",
                 f"etcd            {etcd}  (log {self.dir / 'etcd.log'})",
                 f"admin KUBECONFIG={self.kubeconfig(ADMIN)}"]
        for name in self.users:
            lines.append(f"{name:<6} KUBECONFIG={self.kubeconfig(name)}  "
                         f"(groups: {', '.join(self.users[name].groups) or '-'})")
        return lines
