"""Benchmarks (`make bench`). Each module runs as `python -m bench.<name>` and prints figures."""
