"""``python -m llmbatch.bench``: our worker against two baselines, on the same job and endpoint.

See :mod:`llmbatch.bench.run` for the command line and ``docs/benchmarks.md`` for the latest figures.
"""
