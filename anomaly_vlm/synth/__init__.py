"""Simulated defects with exact ground truth, and instruction conversations built from them."""

# The simulator families register themselves with `simulators` on import.
from . import damage, marks, pasted  # noqa: F401
