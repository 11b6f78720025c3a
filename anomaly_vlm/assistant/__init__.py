"""The anomaly assistant: language models that answer from the localizer's findings."""
