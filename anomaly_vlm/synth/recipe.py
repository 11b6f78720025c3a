"""Synthesis recipes: what to draw defects on, which defects, and how conversations go.

A recipe is a YAML file in `data_recipes/`, checked against these dataclasses when it
is loaded, so a typo fails at once with the file and key named, not hours into a run.
Relative paths in a recipe are relative to the recipe file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..configs import ConfigError, check_share, check_span, from_dict
from ..errors import DatasetError
from .conversations import ConversationConfig
from .findings import FindingsNoise
from .simulators import simulator_config


@dataclass
class SourceConfig:
    kind: Literal["folder", "procedural"] = field(
        default="folder", metadata={"help": "folder: normal photos from `path`; procedural: drawn images, no input"})
    path: str | None = field(
        default=None, metadata={"help": "image folder, MVTec/VisA category root (its train/good) or dataset root"})
    content: Literal["object", "texture", "mixed"] = field(
        default="object", metadata={"help": "object: a part on a backdrop (defects land on the part); texture: "
                                            "defects anywhere; mixed: both (procedural only)"})
    object_name: str | None = field(
        default=None, metadata={"help": "what conversations call the item; default the category name"})
    image_size: int = field(default=512, metadata={"help": "longer side of the written images, in pixels"})


@dataclass
class SimulatorChoice:
    weight: float = field(default=1.0, metadata={"help": "relative chance of drawing this defect"})
    config: dict[str, Any] = field(default_factory=dict, metadata={"help": "the simulator's own config fields"})


@dataclass
class Recipe:
    name: str = field(default="synthetic", metadata={"help": "category name of the written samples"})
    source: SourceConfig = field(default_factory=SourceConfig)
    textures: str | None = field(
        default=None, metadata={"help": "folder of texture photos (e.g. DTD) filling Perlin defects; null: procedural"})
    num: int = field(default=1000, metadata={"help": "number of samples"})
    seed: int = field(default=0, metadata={"help": "sample i is drawn from the generator seeded with (seed, i)"})
    normal_ratio: float = field(default=0.2, metadata={"help": "fraction of samples left defect-free"})
    defects_per_image: tuple[int, int] = field(default=(1, 2), metadata={"help": "fewest and most defects drawn"})
    simulators: dict[str, SimulatorChoice] = field(
        default_factory=lambda: {"perlin": SimulatorChoice(), "scratch": SimulatorChoice()},
        metadata={"help": "simulator name -> weight and config"})
    findings: FindingsNoise = field(default_factory=FindingsNoise)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)

    def simulator_configs(self) -> dict[str, Any]:
        """Each simulator's typed config, built from the recipe's plain mapping."""
        return {name: simulator_config(name, choice.config) for name, choice in self.simulators.items()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_recipe(recipe: Recipe, where: str) -> None:
    source = recipe.source
    if source.kind == "folder" and not source.path:
        raise ConfigError(f"{where}: source.path is needed for a folder source (or pass --source DIR)")
    if source.kind == "folder" and source.content == "mixed":
        raise ConfigError(f"{where}: source.content 'mixed' is for procedural sources; say object or texture")
    if source.image_size < 64:
        raise ConfigError(f"{where}: source.image_size must be at least 64, got {source.image_size}")
    if recipe.num < 1:
        raise ConfigError(f"{where}: num must be at least 1, got {recipe.num}")
    try:
        check_share("normal_ratio", recipe.normal_ratio)
        check_span("defects_per_image", recipe.defects_per_image, 1)
        for name in ("miss_rate", "false_alarm_rate", "review_rate", "weak_rate"):
            check_share(f"findings.{name}", getattr(recipe.findings, name))
        check_span("findings.thresholds", recipe.findings.thresholds, 0.05)
        check_span("findings.review_margins", recipe.findings.review_margins, 0)
        if recipe.findings.thresholds[1] > 0.95:
            raise ConfigError(f"findings.thresholds must stay at most 0.95, got {list(recipe.findings.thresholds)}")
        check_span("conversation.turns", recipe.conversation.turns, 1)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not recipe.simulators:
        raise ConfigError(f"{where}: simulators must name at least one defect simulator")
    for name, choice in recipe.simulators.items():
        if choice.weight <= 0:
            raise ConfigError(f"{where}: simulators.{name}.weight must be positive, got {choice.weight}")
    try:
        recipe.simulator_configs()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _resolve(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser()
    return str(resolved if resolved.is_absolute() else (base / resolved).resolve())


def recipe_from_dict(values: Any, where: str, base: Path = Path(".")) -> Recipe:
    """A checked recipe; `base` is the folder that relative paths are relative to."""
    recipe = from_dict(Recipe, values, where)
    recipe.source.path = _resolve(recipe.source.path, base)
    recipe.textures = _resolve(recipe.textures, base)
    _check_recipe(recipe, where)
    return recipe


def load_recipe(path: str | Path, **overrides: Any) -> Recipe:
    """Read and check a recipe file. `overrides` (num, seed, source_path) replace its values."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: recipe file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML ({exc})") from None
    values = dict(values) if isinstance(values, dict) else values
    if isinstance(values, dict):
        for key in ("num", "seed"):
            if overrides.get(key) is not None:
                values[key] = overrides[key]
        if overrides.get("source_path") is not None:
            values["source"] = {**(values.get("source") or {}), "kind": "folder",
                                "path": str(Path(overrides["source_path"]).resolve())}
    try:
        return recipe_from_dict(values, f"{path}: recipe", path.parent)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
