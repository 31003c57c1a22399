"""Benchmarks of the zoo, run as ``python -m benchmarks NAME``; one JSON line per figure.

Not part of ``make test``: timing belongs here, never in tests.
"""
