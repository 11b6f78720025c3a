"""Synthetic MVTec-layout datasets generated inside the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def textured_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth grey surface with fine noise, like a machined part."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 120 + 30 * np.sin(2 * np.pi * (xx * 2 + yy)) + rng.normal(0, 6, (size, size))
    return np.repeat(base[..., None], 3, axis=2)


def plant_defect(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Paint a saturated rectangle; return its mask."""
    mask = np.zeros((size, size), dtype=bool)
    h, w = rng.integers(size // 6, size // 3, 2)
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    mask[y : y + h, x : x + w] = True
    image[mask] = (255, 40, 20)
    return mask


def make_category(root: Path, name: str = "widget", size: int = 64, normal: int = 6, defective: int = 6,
                  train: int = 4, masks: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    category = root / name

    def save(array: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)

    for i in range(train):
        save(textured_image(rng, size), category / "train" / "good" / f"{i:03d}.png")
    for i in range(normal):
        save(textured_image(rng, size), category / "test" / "good" / f"{i:03d}.png")
    for i in range(defective):
        image = textured_image(rng, size)
        mask = plant_defect(image, rng, size)
        save(image, category / "test" / "stain" / f"{i:03d}.png")
        if masks:
            save(mask.astype(np.uint8) * 255, category / "ground_truth" / "stain" / f"{i:03d}_mask.png")
    return category


# A LLaVA-style template that walks content lists, as multimodal processors' templates do.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "<|end|>\n{% endfor %}"
)


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with a chat template that walks content lists."""
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def assert_same_scorer(restored, fitted, images) -> None:
    """A reference scorer rebuilt from its state scores, holds out and describes itself as the fitted one."""
    expected, got = fitted.score(images), restored.score(images)
    np.testing.assert_array_equal(got.anomaly_map, expected.anomaly_map)
    np.testing.assert_array_equal(got.image_score, expected.image_score)
    np.testing.assert_array_equal(restored.leave_one_out().image_score, fitted.leave_one_out().image_score)
    assert restored.describe() == fitted.describe()
