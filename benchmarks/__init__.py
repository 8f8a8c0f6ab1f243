"""The benchmarks of trvae-scvi, run as ``python -m benchmarks <benchmark> ...``.

Nothing is imported here, so that a peer's virtual environment (which cannot import
``trvae_scvi``) can still run a module of this package that needs only numpy.
"""
