"""What every benchmark shares: processes, a load generator, statistics, output."""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from dev.support.factory import SIGNING_ENV
from dev.support.procs import FUNC_PYTHON, FunctionProcess

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BASELINES = BENCH / "baselines"
FUNC = ROOT / ".cluster" / "bin" / "func"  # Knative's func CLI (dev/cluster/build.sh)
CREATED = BENCH / "results" / "func-create"
# What func's scaffolding for the cloudevents template runs (its service/main.py).
_CLOUDEVENT_SERVICE = ("import sys; sys.path.insert(0, sys.argv[1]); "
                       "from func_python.cloudevent import serve; from function import new; "
                       "serve(new)")
PROFILES = BENCH / "results" / "profiles"  # git-ignored

# ----------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


# ----------------------------------------------------------------- test doubles


# ----------------------------------------------------------------- processes


def _proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of one process in MB (``VmRSS``; ``VmHWM`` for the peak)."""
    value = _proc_status(pid).get(key, "0 kB").split()[0]
    return round(int(value) / 1024.0, 1)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu_seconds() -> float:
    """CPU used by this process: the load generator and the in-process fakes."""
    t = os.times()
    return t.user + t.system


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


class BenchProcess(FunctionProcess):
    """A FunctionProcess that may live outside functions/ and may run under cProfile.

    With ``profile`` set, the function is served by ``python -m bench.profiled`` (the
    same app object, under waitress, each request profiled) and the stats are written
    to that path when the process is stopped.
    """

    def __init__(self, name: str, *, runtime: str = "ff", env: dict[str, str] | None = None,
                 directory: Path | None = None, profile: Path | None = None,
                 cloudevent: bool = False) -> None:
        env = dict(env or {})
        if profile is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        super().__init__(name, runtime=runtime, env=env)
        if directory is not None:
            self.dir = directory
        self.profile = profile
        self.cloudevent = cloudevent  # served by func-python's CloudEvent middleware

    def command(self) -> list[str]:
        if self.cloudevent:
            return [str(FUNC_PYTHON), "-c", _CLOUDEVENT_SERVICE, str(self.dir)]
        if self.profile is None:
            return super().command()
        return [sys.executable, "-m", "bench.profiled", self.runtime, str(self.dir),
                str(self.port), str(self.profile)]

    def spawn(self) -> float:
        """Start the process without waiting; returns the monotonic start time."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update({"PYTHONUNBUFFERED": "1", "WORKERS": "1", "THREADS": "8",
                    "LISTEN_ADDRESS": f"127.0.0.1:{self.port}"})
        env.update(SIGNING_ENV)
        env.update(self.env)
        started = time.perf_counter()
        self.proc = subprocess.Popen(self.command(), cwd=self.dir, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        return started

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def serving_pid(self) -> int:
        """The process that runs the function: gunicorn's worker for ff, else the process."""
        kids = children(self.pid) if self.runtime == "ff" and self.profile is None else []
        return kids[0] if kids else self.pid

    def rss(self) -> dict[str, float]:
        pid = self.serving_pid()
        return {"rss_mb": rss_mb(pid), "peak_rss_mb": rss_mb(pid, "VmHWM")}

    def cpu(self) -> float:
        return cpu_seconds(self.serving_pid())

    def wait_idle(self, window: float = 1.0, busy: float = 0.05,
                  timeout: float = 300.0) -> float:
        """Wait until the process used under ``busy`` of a CPU for ``window`` seconds
        (background work after start: status writes, caches); returns seconds waited."""
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            before = self.cpu()
            time.sleep(window)
            if (self.cpu() - before) / window < busy:
                break
        return time.perf_counter() - started

    def stop(self) -> None:
        super().stop()
        if self.profile is not None and self.profile.exists():
            print(f"  profile written: {self.profile.relative_to(ROOT)}")


def baseline(kind: str, runtime: str, **kwargs: Any) -> BenchProcess:
    """``hello`` (a hello-world function), ``hello_kubernetes`` (the same plus ``import
    kubernetes``) or ``noop`` (reads the body, answers 202). Under func-python the
    hello-worlds are the one ``func create -l python -t cloudevents`` makes."""
    if runtime == "func" and kind in ("hello", "hello_kubernetes"):
        return BenchProcess(f"baseline-{kind}", runtime=runtime, cloudevent=True,
                            directory=func_created(kind == "hello_kubernetes"), **kwargs)
    return BenchProcess(f"baseline-{kind}", runtime=runtime, directory=BASELINES / kind,
                        **kwargs)


@functools.cache
def func_created(with_kubernetes: bool = False) -> Path:
    """A hello-world made now by Knative's ``func create -l python -t cloudevents``
    (offline: func carries its templates), optionally importing the Kubernetes client
    first, the floor of any function built on it."""
    name = "hello-kubernetes" if with_kubernetes else "hello"
    target = CREATED / name
    if not FUNC.exists():
        raise SystemExit(f"{FUNC.relative_to(ROOT)} is missing: dev/cluster/build.sh builds "
                         "Knative's func CLI, whose hello-world is the cold-start baseline")
    if target.exists():
        shutil.rmtree(target)
    CREATED.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([str(FUNC), "create", "-l", "python", "-t", "cloudevents", name],
                          cwd=CREATED, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(CREATED)}, check=False)
    if made.returncode != 0:
        raise SystemExit(f"func create failed: {made.stderr.strip() or made.stdout.strip()}")
    if with_kubernetes:
        code = target / "function" / "func.py"
        code.write_text("import kubernetes  # noqa: F401  (its import time)\n"
                        + code.read_text())
    return target


def profile_path(name: str, enabled: bool) -> Path | None:
    if not enabled:
        return None
    PROFILES.mkdir(parents=True, exist_ok=True)
    path = PROFILES / f"{name}.prof"
    path.unlink(missing_ok=True)
    return path


def show_profile(path: Path | None, limit: int = 25) -> list[str]:
    """The top functions by cumulative time, as printable lines."""
    if path is None or not path.exists():
        return []
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return lines


# ----------------------------------------------------------------- load generator


def session(pool: int = 16) -> requests.Session:
    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=0)
    s.mount("http://", adapter)
    return s


@dataclass
class LoadResult:
    elapsed: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    function_cpu: float = math.nan  # CPU seconds the function's process used
    harness_cpu: float = math.nan  # CPU seconds this process (load, fakes) used

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def function_cpu_ms(self) -> float:
        """Function CPU per request, ms."""
        return self.function_cpu * 1000.0 / max(len(self.latencies), 1)

    @property
    def harness_cpu_ms(self) -> float:
        return self.harness_cpu * 1000.0 / max(len(self.latencies), 1)

    def ok(self, *expected: int) -> bool:
        return set(self.statuses) <= set(expected)


Job = Callable[[int], tuple[dict[str, str], bytes]]


def run_load(url: str, job: Job, count: int, *, concurrency: int = 4,
             params: dict[str, str] | None = None, timeout: float = 30.0,
             client: requests.Session | None = None,
             proc: BenchProcess | None = None) -> LoadResult:
    """POST ``count`` requests (``job(i)`` → headers, body) from ``concurrency`` threads.

    With ``proc``, also the CPU time its serving process used meanwhile.
    """
    client = client or session(concurrency)
    lock = threading.Lock()
    counter = iter(range(count))
    result = LoadResult(0.0)
    prepared = [job(i) for i in range(count)]

    def worker() -> None:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            headers, body = prepared[i]
            t0 = time.perf_counter()
            try:
                status = client.post(url, data=body, headers=headers, params=params,
                                     timeout=timeout).status_code
            except requests.RequestException:
                status = 0
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
        with lock:
            result.latencies.extend(latencies)
            result.statuses.update(statuses)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    cpu0 = proc.cpu() if proc is not None else math.nan
    own0 = own_cpu_seconds()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed = time.perf_counter() - started
    result.harness_cpu = own_cpu_seconds() - own0
    if proc is not None:
        result.function_cpu = proc.cpu() - cpu0
    return result


# ----------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in columns]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(v.rjust(w) if n and i else v.ljust(w)
                               for i, (v, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def emit(name: str, results: dict[str, Any]) -> dict[str, Any]:
    line = {"bench": name, **results}
    print(json.dumps(line, sort_keys=False, default=str))
    sys.stdout.flush()
    return line


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextmanager
def running(*procs: FunctionProcess) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()
