"""Benchmarks of sesender: run each as ``python -m bench.<name>`` from the repository root.

They are not run by CI, except for ``tests/unit/test_bench_smoke.py``, which runs each one in its
``--quick`` mode on tiny sizes. Figures, commands and the machine are in ``docs/performance.md``.
"""
