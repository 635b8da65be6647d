"""Run the benchmarks: all of them, or the ones named (enricher, filter, notifier,
coldstart, chain). Each prints a table and one JSON line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import emit, log, machine

BENCHMARKS = {
    "enricher": "bench.enricher",
    "filter": "bench.filter",
    "notifier": "bench.notifier",
    "coldstart": "bench.coldstart",
    "chain": "bench.chain",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and smaller sizes (a smoke run, noisier numbers)")
    parser.add_argument("--profile", action="store_true",
                        help="serve the measured function under cProfile (slower; numbers "
                             "are for reading the profile, not for the targets); stats go "
                             "to bench/results/profiles/")
    parser.add_argument("--out", type=Path,
                        help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.names or list(BENCHMARKS)
    if "chain" in names:  # into its namespaces before any benchmark starts a thread
        from bench.chain import prepare

        prepare()
    facts = emit("machine", {**machine(), "quick": args.quick, "profile": args.profile,
                             "command": "python -m bench " + " ".join(sys.argv[1:])})
    lines: list[dict[str, Any]] = [facts]
    failed = []
    for name in names:
        log(f"== {name}")
        started = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            lines.append(module.run(args))
        except Exception:
            traceback.print_exc()
            failed.append(name)
        log(f"== {name} took {time.perf_counter() - started:.0f}s")
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            for line in lines:
                out.write(json.dumps(line, default=str) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
