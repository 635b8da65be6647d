"""Benchmarks: each function measured against its limit (run on demand, not in CI).

    python -m bench                       # all of them
    python -m bench enricher coldstart    # a subset
    python -m bench --quick               # fewer rounds, smaller sizes
    python -m bench enricher --profile    # also write a cProfile of the function process

Every benchmark prints a small table and one JSON line (``{"bench": ...}``).
Ratios are measured inside one run, baseline and subject alternating, because
the machine the numbers come from is shared and noisy.
"""
