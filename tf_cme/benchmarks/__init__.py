"""Benchmarks: each data-moving stage side by side with a peer (``scripts/bench.py``).

Each area adds a module ``tf_cme/benchmarks/<area>.py`` whose stages register
themselves with :func:`tf_cme.benchmarks.harness.stage`; ``scripts/bench.py``
imports every module of this package and runs the selected stages.
"""
