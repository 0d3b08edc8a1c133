"""The benchmark scripts, run as ``python -m benchmarks.<name>`` (or ``protobench bench
<name>``) from a source checkout; each module defines one :class:`_harness.Benchmark`.

They import only protobench's public API. Results: ``benchmarks/results/``.
"""
