"""Benchmark commands (not tests): each writes a JSON report and a plot under artifacts/bench/."""
