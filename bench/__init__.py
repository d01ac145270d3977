"""Benchmarks: `make bench` (python -m bench). Every speed claim in the README comes from here."""
