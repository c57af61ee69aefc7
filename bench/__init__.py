"""Benchmarks: executor overhead and the GPU smoke run (see each module)."""
