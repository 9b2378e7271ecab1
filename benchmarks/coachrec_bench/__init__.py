"""Benchmarks: each `coachrec bench NAME` prints a table and writes benchmarks/results/NAME.json."""
