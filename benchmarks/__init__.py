"""Runnable benchmarks: ``python -m benchmarks NAME`` (``all`` runs every one)."""
