"""Benchmarks: ``python -m bench`` runs every ``bench/bench_*.py`` module's
``run() -> list[dict]``, prints each table and writes ``bench/results/<module>.json``."""
