"""Text resources shipped in `prompts/`, validated on load."""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from .errors import DatasetError


def templates_dir() -> Traversable:
    """The `prompts/` folder: the source checkout's, else the copy installed with the package."""
    source = Path(__file__).resolve().parent.parent / "prompts"
    if source.is_dir():
        return source
    return resources.files("anomaly_vlm.prompt_files")


def text_list(value, where: str) -> list[str]:
    """A prompts entry that must be a non-empty list of texts; `where` names it in the error."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DatasetError(f"{where}: needs a non-empty list of texts (quote them in the YAML)")
    return value


def load_yaml(name: str | Path) -> dict:
    """A YAML mapping from `prompts/` (by file name) or from any path."""
    path = Path(name) if Path(name).is_absolute() or Path(name).is_file() else templates_dir() / str(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: cannot read prompt file ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping at the top level")
    return data


@dataclass(frozen=True)
class StateWords:
    """States x templates for the hand-crafted CLIP prompt ensemble."""

    normal_states: tuple[str, ...]
    abnormal_states: tuple[str, ...]
    templates: tuple[str, ...]

    @classmethod
    def load(cls, name: str | Path = "clip_states.yaml") -> StateWords:
        data = load_yaml(name)
        expected = {f.name for f in fields(cls)}
        unknown = set(data) - expected
        missing = expected - set(data)
        if unknown or missing:
            raise DatasetError(f"{name}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}")
        for key in expected:
            items = data[key]
            if not isinstance(items, list) or not items or not all(isinstance(t, str) and "{}" in t for t in items):
                raise DatasetError(f"{name}: '{key}' must be a non-empty list of strings each containing '{{}}'")
        return cls(**{k: tuple(data[k]) for k in expected})
