"""Benchmarks that measure spikewire against a baseline in the same run (ratios, not absolute asserts)."""
