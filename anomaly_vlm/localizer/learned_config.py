"""How a product's own localizer is learned: `LearnConfig` and the simulator mixes of the data recipes.

Its own module because the sampler, the scorer (which rebuilds its network from a
saved config) and the training loop all read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..configs import from_dict

if TYPE_CHECKING:
    from ..synth.recipe import Recipe

TEXTURE_MIX: dict[str, float] = {
    "perlin": 2.0, "cutpaste": 1.0, "scar": 1.0, "nsa": 1.0, "scratch": 1.5, "crack": 1.0,
    "hole": 1.0, "stain": 1.5, "contamination": 1.5, "missing": 0.5,
}
"""data_recipes/textures.yaml's simulator weights."""
OBJECT_MIX: dict[str, float] = {
    "scratch": 2.0, "crack": 1.5, "hole": 1.5, "stain": 1.5, "contamination": 1.5, "missing": 1.0,
    "perlin": 1.0, "cutpaste": 0.5, "scar": 0.5, "nsa": 1.0,
}
"""data_recipes/objects.yaml's simulator weights."""


@dataclass
class LearnConfig:
    """How one product is learned from its good images."""

    image_size: int = field(default=256, metadata={"help": "shorter side of the working image in pixels (aspect kept)"})
    crop: int = field(default=128, metadata={"help": "side of the square training crops (cut around a defect); 0 = image_size"})
    steps: int = field(default=1500, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "crops per step"})
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate (cosine decay to 1 % after a short warm-up)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seeds the weights, the holdout choice and every batch"})
    width: int = field(default=8, metadata={"help": "channels of the U-Net's first level (doubling per level)"})
    levels: int = field(default=4, metadata={"help": "U-Net levels (levels - 1 poolings)"})
    features: bool = field(default=True, metadata={"help": "feed the built-in filter-bank responses beside the pixels"})
    content: Literal["object", "texture"] = field(default="object", metadata={"help": "object: defects on the estimated part only; texture: anywhere"})
    simulators: dict[str, float] | None = field(default=None, metadata={
        "help": "simulator name -> weight; default: the recipe mix of `content` (objects.yaml or textures.yaml)"})
    simulator_options: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"help": "simulator name -> config overrides"})
    anomaly_ratio: float = field(default=0.5, metadata={"help": "share of training crops given defects"})
    defects_per_image: tuple[int, int] = field(default=(1, 2), metadata={"help": "defects per anomalous crop, inclusive range"})
    flips: bool = field(default=True, metadata={"help": "random horizontal and vertical flips of training crops"})
    focal_gamma: float = field(default=2.0, metadata={"help": "focal loss exponent"})
    dice_weight: float = field(default=1.0, metadata={"help": "weight of the soft dice loss beside the focal loss"})
    members: int = field(default=1, metadata={
        "help": "networks trained with consecutive seeds whose maps are averaged (each adds one training's time); "
                "one seed's model can be far weaker on real defects than another's"})
    holdout: int = field(default=6, metadata={"help": "good images kept out of training for calibration and validation"})
    validation_per_image: int = field(default=12, metadata={"help": "simulated defects scored per held-out image"})
    map_sigma: float = field(default=4.0, metadata={"help": "Gaussian smoothing of the output map, in working pixels (4 as the other modes)"})
    score_pool: int = field(default=9, metadata={"help": "image score = max of the map averaged over this window (pixels)"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between resumable checkpoints"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 leaves torch's default"})

    def __post_init__(self) -> None:
        if self.simulators is None:
            self.simulators = dict(TEXTURE_MIX if self.content == "texture" else OBJECT_MIX)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict) -> LearnConfig:
        return from_dict(cls, values, "learn config")


def with_recipe(config: LearnConfig, recipe: Recipe) -> LearnConfig:
    """`config` drawing a product recipe's defects: its simulators, their options, its defect count and content.

    A product recipe is how a user who knows what goes wrong on a line (thin cracks
    on a commutator, say) says so; without one the content's recipe mix is used.
    """
    return dataclasses.replace(
        config,
        content=recipe.source.content,
        simulators={name: float(choice.weight) for name, choice in recipe.simulators.items()},
        simulator_options={name: dict(choice.config) for name, choice in recipe.simulators.items() if choice.config},
        defects_per_image=tuple(recipe.defects_per_image),
    )
