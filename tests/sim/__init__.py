"""Deterministic simulation of the whole saga (see ``tests/sim/harness.py``)."""
