"""Run a function as a real HTTP server process, through either runtime.

``functions-framework`` is started exactly as documented
(``functions-framework --target handle --port N`` in the function folder, the dev
environment ``.venv``). ``func`` runs what func's scaffolding runs for the function
(its ``service/main.py``: ``from function import new`` served by func-python's http
middleware, on ``LISTEN_ADDRESS``) in ``.venv-func``, the environment func would build:
func-python and the functions' pyproject dependencies (cloudevents 2.x), see the
Makefile.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from dev.support.factory import SIGNING_ENV

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
FUNC_PYTHON = ROOT / ".venv-func" / "bin" / "python"
# func's service/main.py for a function with `invoke: http`, with the function's folder
# where func puts it (on the path).
_FUNC_SERVICE = ("import sys; sys.path.insert(0, sys.argv[1]); "
                 "from func_python.http import serve; from function import new; serve(new)")


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port for a process that binds it later.

    A port the kernel picked (``bind(0)``) and we closed again can be taken by the next
    outgoing connection before the process binds it: both draw from the ephemeral range.
    So the port comes from just below that range, where the kernel never picks one by
    itself, is free now, and is never handed out twice by this process.
    """
    high = _ephemeral_low()
    low = max(1024, high - 10000)
    with _ports_lock:
        for _ in range(1000):
            port = random.randrange(low, high)
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def end_session(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                timeout: float = 10.0, *, leader_only: bool = False) -> None:
    """``sig`` to a process started with ``start_new_session`` and everything in its
    session (a launcher and its binary, a server and its workers are one pod; with
    ``leader_only`` to the process alone, which ends its workers itself), SIGKILL to them
    all after ``timeout``: nothing of it outlives this, as nothing of a pod outlives the
    pod."""

    def signal_all(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)  # its own session: the group is its pid

    if proc.poll() is None:
        if leader_only:
            proc.send_signal(sig)
        else:
            signal_all(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    signal_all(signal.SIGKILL)
    proc.wait(10)


class FunctionProcess:
    def __init__(self, name: str, *, runtime: str = "ff", env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        if runtime not in ("ff", "func"):
            raise ValueError(runtime)
        self.name = name
        self.runtime = runtime
        self.port = port or free_port()
        self.dir = FUNCTIONS / name
        self.env = env or {}
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None
        self._read_to = 0  # log_records(): how far the log has been parsed
        self._records: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.runtime == "ff":
            return [sys.executable, "-m", "functions_framework", "--target", "handle",
                    "--host", "127.0.0.1", "--port", str(self.port)]
        if not FUNC_PYTHON.exists():
            raise RuntimeError(f"{FUNC_PYTHON} is missing: `make test` builds it (func's "
                               f"environment for the functions)")
        return [str(FUNC_PYTHON), "-c", _FUNC_SERVICE, str(self.dir)]

    def start(self, timeout: float = 30.0, wait_ready: bool = False) -> FunctionProcess:
        if self.proc is not None and self.proc.poll() is None:
            # A second process would take the port's place in this object and outlive it.
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update({"PYTHONUNBUFFERED": "1", "WORKERS": "1", "THREADS": "8",
                    "LISTEN_ADDRESS": f"127.0.0.1:{self.port}"})
        env.update(SIGNING_ENV)  # the tests' shared signing key (a test may override it)
        env.update(self.env)
        self._log.flush()
        started_at = Path(self._log.name).stat().st_size  # this start's output follows
        # A session of its own: ``kill()`` takes its workers with it, as a container's end.
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        path = "/health/readiness" if wait_ready else "/health/liveness"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.output()[-3000:]}")
            try:
                # A process restarted into a redelivery storm answers its health check
                # after the requests queued before it: wait for the answer, not 1 s.
                wait = max(1.0, deadline - time.monotonic())
                if requests.get(self.url + path, timeout=(1, wait)).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        with socket.socket() as probe:
            taken = probe.connect_ex(("127.0.0.1", self.port)) == 0
        since = self.output().encode()[started_at:].decode(errors="replace")
        raise RuntimeError(f"{self.name} did not start in {timeout}s (port {self.port} "
                           f"{'answers for another process' if taken else 'is free'}); "
                           f"its output:\n{since[-3000:] or '(none)'}")

    def stop(self) -> None:
        """SIGTERM, 10 s to finish, then SIGKILL; no worker outlives it (a worker left
        behind would keep the port from the next start)."""
        if self.proc is not None:
            end_session(self.proc, leader_only=True)  # gunicorn ends its own workers

    def kill(self) -> None:
        """``kill -9`` of the process and its workers (a container killed): no handler
        runs, whatever was in flight is cut off."""
        if self.proc is not None:
            end_session(self.proc, signal.SIGKILL)

    @property
    def log_path(self) -> Path:
        """The file the process's stdout and stderr go to."""
        return Path(self._log.name)

    def output(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines the function wrote (other lines are skipped). Only what was
        written since the last call is read and parsed, so polling stays cheap."""
        self._log.flush()
        with open(self._log.name, "rb") as log:
            log.seek(self._read_to)
            chunk = log.read()
        complete = chunk.rfind(b"\n") + 1
        self._read_to += complete
        for raw in chunk[:complete].splitlines():
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("{"):
                try:
                    self._records.append(json.loads(line))
                except ValueError:
                    continue
        return list(self._records)

    def __enter__(self) -> FunctionProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
