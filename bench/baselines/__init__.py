"""Baseline functions the benchmarks compare against (not deployed)."""
