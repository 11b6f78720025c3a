"""anomaly_vlm: zero-shot industrial anomaly localization with CLIP, explained by an LLM."""

__version__ = "0.1.0"
