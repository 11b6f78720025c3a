"""Prompts learned on a product: simulated auxiliary data from its good images, fine-tuning, fusion, calibration."""

import json

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.cli import main
from anomaly_vlm.io import load_mask
from anomaly_vlm.localizer.learned_config import TEXTURE_MIX, LearnConfig
from anomaly_vlm.localizer.product_prompts import DONE_FILE, ProductPromptConfig, simulated_dataset
from anomaly_vlm.products import PROMPTS_KEY, ProductStore

from .synthetic import textured_image

TINY = ["--backbone", "anomaly-vlm-tiny", "--weights", "none", "--image-size", "64", "--device", "cpu"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOMALY_VLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _parts(count: int, size: tuple[int, int] = (80, 64)) -> list[Image.Image]:
    images = []
    for seed in range(count):
        array = textured_image(np.random.default_rng(seed), max(size))[: size[0], : size[1]]
        images.append(Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)))
    return images


def test_simulated_dataset_holds_good_and_defective_windows_with_exact_masks(tmp_path):
    learn = LearnConfig(content="texture", simulators=dict(TEXTURE_MIX))
    config = ProductPromptConfig(windows_per_image=4, seed=1)
    samples = simulated_dataset(_parts(3), tmp_path / "sim", 48, learn, config)
    assert len(samples) == 12
    labels = [s.label for s in samples]
    assert 0 < sum(labels) <= 6 and labels.count(0) >= 6
    for sample in samples:
        with Image.open(sample.path) as image:
            assert image.size == (48, 48)
        if sample.label:
            assert load_mask(sample.mask_path).any()
    written = json.loads((tmp_path / "sim" / DONE_FILE).read_text())
    assert written["good"] + written["simulated"] == 12
    first = samples[0].path.stat().st_mtime_ns
    again = simulated_dataset(_parts(3), tmp_path / "sim", 48, learn, config)
    assert [s.path for s in again] == [s.path for s in samples] and samples[0].path.stat().st_mtime_ns == first


def test_product_learn_with_clip_fine_tunes_prompts_and_inspects_with_them(home, dataset_root, tmp_path, capsys):
    learning = ["--learn-steps", "4", "--learn-image-size", "64", "--learn-holdout", "2", "--learn-content", "texture",
                "--learn-prompt-epochs", "1", "--learn-prompt-windows", "2"]
    assert main(["product", "add", "widget", "--good", str(dataset_root / "widget" / "train"), *TINY,
                 "--learn", *learning]) == 0
    printed = capsys.readouterr().out
    assert "learned prompts for widget" in printed and "reference + learned prompts fused" in printed
    profile = ProductStore().load("widget")
    assert profile.features == ["builtin", "clip"]
    assert (profile.prompts_folder / "prompts.safetensors").is_file() and profile.prompts["mode"] == "prompt"
    assert profile.thresholds[PROMPTS_KEY]["source"] == "product"
    assert not ProductStore().training_folder("widget", "prompt_checkpoint").exists()
    checkpoint = json.loads((profile.prompts_folder / "config.json").read_text())
    assert "product widget" in checkpoint["source"]

    out = tmp_path / "scores"
    assert main(["score", str(dataset_root / "widget" / "test"), "--product", "widget", "--features", "clip", *TINY,
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [p["mode"] for p in results["models"]["parts"]] == ["prompt", "reference"]
    assert results["models"]["parts"][0]["prompts_digest"] == profile.prompts["prompts_digest"]
    assert results["thresholds"] == profile.thresholds[PROMPTS_KEY]
    assert results["models"]["scales"] == profile.fusion[PROMPTS_KEY]
    assert profile.fusion[PROMPTS_KEY]["prompt"]["count"] == 2 and set(profile.fusion) == {"builtin+learned", PROMPTS_KEY}
