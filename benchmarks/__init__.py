"""Benchmark scripts: each prints measured ratios, last line JSON."""
