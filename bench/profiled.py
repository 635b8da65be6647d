"""Serve a function with every request under cProfile (benchmarks only).

    python -m bench.profiled ff <function dir> <port> <stats file>

The app object is functions-framework's ``create_app(target="handle")`` from main.py;
it is served by waitress in one process so that the profile and the serving threads
live together. Each serving thread keeps its own profiler, enabled only while it
handles a request; on SIGTERM the profilers are merged and written to the stats file.

The profilers' clock is each thread's CPU time (``time.thread_time``), so a
thread waiting on a socket or for the GIL is not counted; set
``BENCH_PROFILE_CLOCK=wall`` for wall-clock time instead.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Profiled:
    def __init__(self, app: Wsgi) -> None:
        self.app = app
        self.local = threading.local()
        self.profilers: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        profiler = getattr(self.local, "profiler", None)
        if profiler is None:
            profiler = self.local.profiler = (
                cProfile.Profile() if os.environ.get("BENCH_PROFILE_CLOCK") == "wall"
                else cProfile.Profile(time.thread_time))
            with self.lock:
                self.profilers.append(profiler)
        profiler.enable()
        try:
            return list(self.app(environ, start_response))
        finally:
            profiler.disable()

    def dump(self, path: str) -> None:
        with self.lock:
            profilers = list(self.profilers)
        stats: pstats.Stats | None = None
        for profiler in profilers:
            profiler.create_stats()
            if stats is None:
                stats = pstats.Stats(profiler)
            else:
                stats.add(profiler)
        if stats is not None:
            stats.dump_stats(path)


def main(argv: list[str]) -> None:
    runtime, directory, port, out = argv
    os.chdir(directory)
    sys.path.insert(0, directory)
    if runtime != "ff":
        raise SystemExit("--profile serves the function with functions-framework (its WSGI "
                         "app under waitress); func-python's ASGI server is not profiled")
    from functions_framework import create_app

    app = create_app(target="handle", source=os.path.join(directory, "main.py"))
    profiled = Profiled(app.wsgi_app)
    app.wsgi_app = profiled  # type: ignore[method-assign]

    def stop(signum: int, frame: object) -> None:
        profiled.dump(out)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from waitress import serve

    serve(app, host="127.0.0.1", port=int(port), threads=8)


if __name__ == "__main__":
    main(sys.argv[1:])
