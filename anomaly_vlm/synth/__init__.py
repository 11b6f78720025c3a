"""Simulated defects with exact ground truth, and instruction conversations built from them."""
