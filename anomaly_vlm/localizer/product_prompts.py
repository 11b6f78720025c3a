"""Object-agnostic prompts fine-tuned on one product: AnomalyCLIP's auxiliary data, made from the product itself.

AnomalyCLIP learns its two state prompts on an auxiliary dataset with real defects
and masks. A product that has only good images gets such a set from the simulators
that teach the learned localizer: each good training image, as square windows of its
aspect-kept working image at the backbone's size, some left good and some given
simulated defects whose exact masks are the segmentation targets. The set is written
once (seeded) in the MVTec layout, so `train_prompts` reads it like any dataset and
resumes the way it always does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_path, write_json
from ..io import read_category
from ..types import Sample
from .checkpoint import PromptCheckpoint
from .learned_config import LearnConfig
from .model import Localizer
from .simulated_defects import STRIDE, DefectSampler, to_array
from .tiling import working_size
from .train import TrainConfig, train_prompts

SIMULATED_DIR, PROMPTS_DIR, DONE_FILE = "simulated", "prompts", "complete.json"


@dataclass
class ProductPromptConfig:
    """How a product's prompts are fine-tuned (the rest follows `TrainConfig`)."""

    windows_per_image: int = field(default=4, metadata={"help": "square windows drawn per good training image, every other one with simulated defects"})
    epochs: int = field(default=5, metadata={"help": "passes over the simulated set"})
    seed: int = field(default=0, metadata={"help": "seeds the simulated set and the data order"})


def simulated_dataset(images: list[Image.Image], folder: Path, side: int, learn: LearnConfig,
                      config: ProductPromptConfig) -> list[Sample]:
    """Good and simulated-defect windows of `images` at `side` px in `folder` (MVTec layout), written once."""
    if not (folder / DONE_FILE).is_file():
        sampler = DefectSampler([to_array(image, working_size(images, side, STRIDE)) for image in images],
                                dataclasses.replace(learn, image_size=side, crop=0))
        rng = np.random.default_rng([config.seed, 3])
        written = {"good": 0, "simulated": 0}
        for index in range(len(images)):
            for window in range(config.windows_per_image):
                image, mask = sampler.sample(rng, index, anomalous=window % 2 == 1)
                kind = "simulated" if mask.any() else "good"
                name = f"{index:04d}_{window}"
                _save(folder / "test" / kind / f"{name}.png", image)
                if mask.any():
                    _save(folder / "ground_truth" / kind / f"{name}_mask.png", mask.astype(np.uint8) * 255)
                written[kind] += 1
        write_json(folder / DONE_FILE, {"side": side, "images": len(images), **written})
    return read_category(folder)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def learn_product_prompts(localizer: Localizer, images: list[Image.Image], folder: str | Path, meta: PromptCheckpoint,
                          learn: LearnConfig = LearnConfig(), config: ProductPromptConfig = ProductPromptConfig(),
                          progress: bool = True) -> Path:
    """Fine-tune `localizer`'s prompt learner on simulated defects over `images`; the checkpoint folder.

    Resumes in `folder` after a kill: the simulated set is kept and `train_prompts`
    continues from its last finished epoch.
    """
    folder = Path(folder)
    samples = simulated_dataset(images, folder / SIMULATED_DIR, localizer.backbone.image_size, learn, config)
    train = TrainConfig(epochs=config.epochs, seed=config.seed)
    return train_prompts(localizer, samples, folder / PROMPTS_DIR, meta, train, resume=True, progress=progress).checkpoint
