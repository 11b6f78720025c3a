"""anomaly_vlm: zero-shot industrial anomaly localization with CLIP, explained by an LLM.

The public API: inspect with `Inspector`, read images with `load_image`, build a
bare scorer with `build_scorer`. Names load on first use, so `import anomaly_vlm`
stays quick.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "Inspector": "inspector",
    "InspectorConfig": "inspector",
    "BatchRun": "inspector",
    "Inspection": "types",
    "Region": "types",
    "load_image": "io",
    "build_scorer": "localizer",
    "ScorerOptions": "localizer",
    "Thresholds": "verdicts",
    "VerdictConfig": "verdicts",
    "ProductStore": "products",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'anomaly_vlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
